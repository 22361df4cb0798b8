"""The pfnr command as users run it: subprocesses, exit codes, one-line errors, JSON output."""

from __future__ import annotations

import contextlib
import io
import json
import os
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

from pfnr_codec.cli import _size, app, main
from pfnr_codec.container import lock_path_of
from pfnr_codec.video import read_video

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
    # Each session's bytes by part add up to its bytes, and the sessions' parts to the archive's.
    for s in info["sessions"]:
        assert sum(s["parts"].values()) == s["bytes"] and s["parts"]["latents"] > 0
    for part, total in info["breakdown"].items():
        assert total == sum(s["parts"].get(part, 0) for s in info["sessions"]) or part == "header"
    assert sum(info["breakdown"].values()) == size
    table = pfnr("info", encoded["archive"])
    assert table.returncode == 0 and "second" in table.stdout and "archive BPP" in table.stdout
    assert "bytes by session" in table.stdout


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
        result = pfnr("decode", "-a", encoded["archive"], "-s", "1", "-o", folder / name, "-y")
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
    for size in ("12x", "-5", "0"):
        one_line_error(
            pfnr("encode", clips[0], "-a", tmp_path / "x.pfnr", "--target-size", size),
            2,
            "--target-size",
        )
    one_line_error(
        pfnr(
            "encode",
            clips[0],
            "-a",
            tmp_path / "x.pfnr",
            "--target-size",
            "9k",
            "-q",
            "--quality",
            "3",
        ),
        2,
        "quality",
    )
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
    try:
        # Interrupt training, not start-up: the lock is taken once the input is read and checked.
        deadline = time.monotonic() + 240
        while not lock_path_of(archive).exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()  # never leave a training process behind a failed test
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


def pfnr_piped(*args: str, stdin: bytes = b"", columns: int = 80) -> subprocess.CompletedProcess:
    """The command in a fresh process with bytes on stdin and a terminal width of `columns`."""
    env = dict(os.environ, COLUMNS=str(columns))
    return subprocess.run(
        [sys.executable, "-m", "pfnr_codec", *map(str, args)],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=300,
    )


def _no_cut_numbers(text: str, columns: int = 80) -> None:
    for line in text.splitlines():
        assert len(line) <= columns, line
    assert "…" not in text, text


def test_encode_reads_stdin_and_its_screen_fits_80_columns(clips, tmp_path):
    archive = tmp_path / "piped.pfnr"
    result = pfnr_piped(
        "encode", "-", "-a", archive, "--preset", "tiny", "--epochs", "3",
        stdin=clips[0].read_bytes(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    screen = result.stdout.decode()
    print(f"encode screen at 80 columns:\n{result.stderr.decode()}{screen}")
    _no_cut_numbers(screen)
    assert "new archive" in screen and "stdin" in screen
    info = json.loads(pfnr("info", "-a", archive, "--json").stdout)
    assert info["sessions"][0]["source"] == "stdin"
    assert info["sessions"][0]["frames"] == read_video(clips[0])[0].shape[0]
    again = pfnr_piped("encode", clips[1], "-a", archive, "--epochs", "2")
    assert again.returncode == 0 and "appended to" in again.stdout.decode()
    empty = pfnr_piped("encode", "-", "-a", tmp_path / "none.pfnr")
    one_line_error(_text(empty), 1, "stdin held no data")


def _text(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    return subprocess.CompletedProcess(
        result.args, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


def test_info_fits_80_columns_and_takes_the_archive_as_an_option(encoded):
    result = pfnr_piped("info", "-a", encoded["archive"])
    assert result.returncode == 0, result.stderr
    screen = result.stdout.decode()
    _no_cut_numbers(screen)
    assert "second" in screen and "archive BPP" in screen
    wide = pfnr_piped("info", encoded["archive"], columns=160).stdout.decode()
    assert "MS-SSIM" in wide and "new w." in wide  # a wide terminal gets every column
    one_line_error(
        pfnr("info", encoded["archive"], "-a", encoded["folder"] / "other.pfnr"), 2, "once"
    )


def test_decode_to_stdout_writes_only_y4m_there(encoded, tmp_path):
    piped = pfnr_piped("decode", "-a", encoded["archive"], "-s", "1", "-o", "-", "--json")
    assert piped.returncode == 0, piped.stderr
    path = tmp_path / "s1.y4m"
    assert pfnr("decode", "-a", encoded["archive"], "-s", "1", "-o", path).returncode == 0
    assert piped.stdout == path.read_bytes()
    assert json.loads(piped.stderr.decode())["output"] == "stdout"


def test_decode_refuses_to_overwrite_unless_told(encoded, tmp_path):
    target = tmp_path / "s1.mkv"
    target.write_bytes(b"keep me")
    one_line_error(pfnr("decode", "-a", encoded["archive"], "-s", "1", "-o", target), 2, "-y")
    assert target.read_bytes() == b"keep me"
    assert pfnr("decode", "-a", encoded["archive"], "-s", "1", "-o", target, "-y").returncode == 0
    assert read_video(target)[0].shape[0] > 0
    folder = encoded["before"]  # a folder of frames counts as an output too
    one_line_error(pfnr("decode", "-a", encoded["archive"], "-s", "1", "-o", folder), 2, "-y")


def test_decode_mp4_plays_everywhere_by_default(encoded, tmp_path):
    target = tmp_path / "s1.mp4"
    result = pfnr("decode", "-a", encoded["archive"], "-s", "1", "-o", target, "--crf", "20")
    assert result.returncode == 0, result.stderr
    with av.open(str(target)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.width % 2, stream.height % 2) == (0, 0)
    assert "odd" in result.stderr  # the clip is 67x45: padded, and the note says so


def test_usage_conventions():
    assert pfnr("-h").returncode == 0
    assert "--pix-fmt" in pfnr("decode", "-h").stdout
    bad = pfnr("encode", "x.mp4", "--frames", "5")
    assert bad.returncode == 2 and "--frames" in bad.stderr and "Traceback" not in bad.stderr
    assert "cpu-time" in pfnr("encode", "-h").stdout  # choices are listed
    one_line_error(pfnr("decode", "-s", "1", "--device", "cuda:x"), 2, "cuda:N")


def test_a_reference_of_another_size_is_warned_about(encoded, clips, tmp_path):
    args = ("decode", "-a", encoded["archive"], "-s", "1", "-o", tmp_path / "s1.y4m", "-y")
    args += ("--frames", "0:5")  # clip 3 is shorter than session 1
    right = pfnr(*args, "--reference", clips[0])
    assert right.returncode == 0 and "warning" not in right.stderr
    wrong = pfnr(*args, "--reference", clips[2])  # 53x37, the session's source is 67x45
    assert wrong.returncode == 0 and "warning" in wrong.stderr and "53x37" in wrong.stderr
    record = json.loads(pfnr(*args, "--reference", clips[2], "--json").stdout)
    assert len(record["warnings"]) == 1


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("150000", 150_000),
        ("150k", 150_000),
        ("1.5M", 1_500_000),
        ("2MB", 2_000_000),
        (" 7 kb", 7000),
    ],
)
def test_a_target_size_reads_like_a_file_size(text, size):
    assert _size(text) == size
