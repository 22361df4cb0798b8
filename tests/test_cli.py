"""The pfnr command as users run it: subprocesses, exit codes, one-line errors, JSON output."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import av
import numpy as np
import pytest
from typer.testing import CliRunner

from pfnr_codec.cli import app, main
from pfnr_codec.video import read_video, resize_frames

ROOT = Path(__file__).resolve().parents[1]


def pfnr(*args: str) -> subprocess.CompletedProcess:
    """Run the command in this process (as `main` does for the console script)."""
    argv = ["pfnr", *map(str, args)]
    stdout, stderr = io.StringIO(), io.StringIO()
    code = 0
    with (
        mock.patch.object(sys, "argv", argv),
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        try:
            main()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return subprocess.CompletedProcess(argv, code, stdout.getvalue(), stderr.getvalue())


def pfnr_process(*args: str) -> subprocess.CompletedProcess:
    """Run the command in a fresh Python process."""
    return subprocess.run(
        [sys.executable, "-m", "pfnr_codec", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def one_line_error(result: subprocess.CompletedProcess, code: int, fragment: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert fragment in lines[0]


@pytest.fixture(scope="module")
def encoded(clips, tmp_path_factory) -> dict:
    """Two sessions encoded through the command line, with JSON output."""
    folder = tmp_path_factory.mktemp("cli")
    archive = folder / "cli.pfnr"
    first = pfnr_process(
        "encode", clips[0], "-a", archive, "--preset", "tiny", "--epochs", "5", "--json"
    )
    assert first.returncode == 0, first.stderr
    decoded_before = folder / "before"
    assert (
        pfnr(
            "decode", "-a", archive, "-s", "1", "-o", decoded_before, "--size", "working"
        ).returncode
        == 0
    )
    second = pfnr("encode", clips[1], "-a", archive, "--epochs", "5", "--name", "second", "--json")
    assert second.returncode == 0, second.stderr
    return {
        "folder": folder,
        "archive": archive,
        "before": decoded_before,
        "reports": [json.loads(first.stdout), json.loads(second.stdout)],
    }


def test_encode_prints_one_json_object_per_run(encoded):
    first, second = encoded["reports"]
    assert first["sessions"][0]["session"] == 1
    assert second["sessions"][0]["session"] == 2
    assert second["sessions"][0]["name"] == "second"


def test_info_shows_both_sessions_and_bytes_match_bpp(encoded):
    result = pfnr("info", encoded["archive"], "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert [s["session"] for s in info["sessions"]] == [1, 2]
    size = encoded["archive"].stat().st_size
    assert info["file_bytes"] == size
    h, w = info["working_size"]
    pixels = sum(s["frames"] for s in info["sessions"]) * h * w
    assert info["bpp"] == pytest.approx(size * 8 / pixels)
    table = pfnr("info", encoded["archive"])
    assert table.returncode == 0 and "second" in table.stdout and "archive BPP" in table.stdout


def test_decode_each_session_and_session_one_is_unchanged(encoded, clips):
    folder = encoded["folder"]
    after = folder / "after"
    result = pfnr(
        "decode", "-a", encoded["archive"], "-s", "1", "-o", after, "--size", "working", "--json"
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["matches_encode"] is True
    before_frames, _ = read_video(encoded["before"])
    after_frames, _ = read_video(after)
    assert before_frames.tobytes() == after_frames.tobytes()
    out = folder / "s2.mkv"
    result = pfnr(
        "decode", "-a", encoded["archive"], "-s", "2", "-o", out, "--reference", clips[1], "--json"
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    frames, _ = read_video(out)
    source, _ = read_video(clips[1])
    assert frames.shape == source.shape
    assert record["psnr"] > 10 and 0 < record["ms_ssim"] <= 1
    assert record["bpp"] == pytest.approx(
        record["bytes"]
        * 8
        / (
            source.shape[0]
            * np.prod(json.loads(pfnr("info", encoded["archive"], "--json").stdout)["working_size"])
        )
    )


def test_decode_to_y4m_and_lossy_mp4_when_named(encoded):
    folder = encoded["folder"]
    for name in ("s1.y4m", "s1.mp4"):
        result = pfnr("decode", "-a", encoded["archive"], "-s", "1", "-o", folder / name)
        assert result.returncode == 0, result.stderr
        assert (folder / name).stat().st_size > 0


def test_error_cases_give_one_line_and_an_exit_code(encoded, clips, tmp_path):
    archive = encoded["archive"]
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    empty = tmp_path / "empty"
    empty.mkdir()
    corrupt = tmp_path / "corrupt.pfnr"
    data = bytearray(archive.read_bytes())
    data[40] ^= 0xFF
    corrupt.write_bytes(bytes(data))
    truncated = tmp_path / "truncated.pfnr"
    truncated.write_bytes(archive.read_bytes()[:-7])
    one_line_error(
        pfnr("encode", tmp_path / "missing.mp4", "-a", tmp_path / "x.pfnr"), 1, "missing.mp4"
    )
    one_line_error(pfnr("encode", text, "-a", tmp_path / "x.pfnr"), 1, "notes.mp4")
    one_line_error(pfnr("encode", empty, "-a", tmp_path / "x.pfnr"), 1, "empty")
    one_line_error(
        pfnr("encode", clips[0], "-a", tmp_path / "x.pfnr", "--frames", "5:99"), 1, "5:99"
    )
    one_line_error(pfnr("encode", clips[0], "-a", tmp_path / "x.pfnr", "--bits", "12"), 2, "bits")
    one_line_error(pfnr("decode", "-a", archive, "-s", "7"), 2, "no session 7")
    one_line_error(pfnr("decode", "-a", corrupt, "-s", "1"), 1, "corrupt.pfnr")
    one_line_error(pfnr("info", truncated), 1, "truncated.pfnr")
    one_line_error(pfnr("info", tmp_path / "nothing.pfnr"), 1, "nothing.pfnr")
    one_line_error(pfnr("info", text), 1, "notes.mp4")
    one_line_error(
        pfnr("decode", "-a", archive, "-s", "1", "-o", tmp_path / "no" / "such" / "dir.mkv"),
        1,
        "dir.mkv",
    )
    one_line_error(
        pfnr("decode", "-a", archive, "-s", "1", "-o", tmp_path / "out.avi"), 1, "out.avi"
    )
    assert not (tmp_path / "x.pfnr").exists()
    usage = pfnr("decode", "-a", archive)  # --session missing
    assert usage.returncode == 2 and "Traceback" not in usage.stderr


def test_a_video_without_frames_is_rejected(tmp_path):
    path = tmp_path / "noframes.mkv"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "bgr0"
    one_line_error(pfnr("encode", path, "-a", tmp_path / "x.pfnr"), 1, "noframes.mkv")


def test_ctrl_c_during_encode_leaves_the_archive_as_it_was(encoded, clips, tmp_path):
    archive = tmp_path / "busy.pfnr"
    shutil.copyfile(encoded["archive"], archive)
    before = archive.read_bytes()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pfnr_codec",
            "encode",
            str(clips[2]),
            "-a",
            str(archive),
            "--epochs",
            "100000",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(6)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    assert archive.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_typer_runner_and_help():
    runner = CliRunner()
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("encode", "decode", "info", "demo"):
        assert command in result.stdout
    assert runner.invoke(app, ["--version"]).stdout.startswith("pfnr ")


def test_the_launcher_runs_the_cli(encoded):
    result = subprocess.run(
        [str(ROOT / "bin" / "pfnr"), "info", str(encoded["archive"]), "--json"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)["sessions"]) == 2


def test_working_size_resizing_of_reference_matches(encoded, clips):
    info = json.loads(pfnr("info", encoded["archive"], "--json").stdout)
    source, _ = read_video(clips[0])
    assert resize_frames(source, *info["working_size"]).shape[1:3] == tuple(info["working_size"])
