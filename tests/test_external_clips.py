"""The external-clip fetcher reads a .deb with the standard library and checks every byte."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from benchmarks import external_clips as ec


def _ar(members: list[tuple[str, bytes]]) -> bytes:
    out = [b"!<arch>\n"]
    for name, body in members:
        header = f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}".encode() + b"`\n"
        out += [header, body, b"\n" if len(body) % 2 else b""]
    return b"".join(out)


def _deb(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return _ar([("debian-binary", b"2.0\n"), ("data.tar.xz", buffer.getvalue())])


@pytest.fixture
def fake_clips(monkeypatch: pytest.MonkeyPatch) -> dict[str, bytes]:
    """Two clips, one stored gzipped as box.mp4 is, pinned to their own hashes."""
    clips = {"a.avi": b"odd-length clip", "b.mp4": b"even clip"}
    monkeypatch.setattr(
        ec,
        "CLIPS",
        {
            "a.avi": ("./data/a.avi", ec.sha256(clips["a.avi"])),
            "b.mp4": ("./html/b.mp4.gz", ec.sha256(clips["b.mp4"])),
        },
    )
    return clips


def test_extract_clips_from_a_deb(fake_clips: dict[str, bytes]) -> None:
    deb = _deb(
        {"./data/a.avi": fake_clips["a.avi"], "./html/b.mp4.gz": gzip.compress(b"even clip")}
    )
    assert ec.extract_clips(deb, ["a.avi", "b.mp4"]) == fake_clips


def test_a_clip_that_differs_from_its_pin_is_refused(fake_clips: dict[str, bytes]) -> None:
    deb = _deb({"./data/a.avi": b"tampered", "./html/b.mp4.gz": gzip.compress(b"even clip")})
    with pytest.raises(ValueError, match="SHA-256"):
        ec.extract_clips(deb, ["a.avi"])
    assert ec.extract_clips(deb, ["b.mp4"]) == {"b.mp4": b"even clip"}


def test_missing_clip_and_bad_archives_are_refused(fake_clips: dict[str, bytes]) -> None:
    with pytest.raises(ValueError, match="not in the package"):
        ec.extract_clips(_deb({"./data/a.avi": fake_clips["a.avi"]}), ["b.mp4"])
    with pytest.raises(ValueError, match="no data.tar"):
        ec.extract_clips(_ar([("debian-binary", b"2.0\n")]), ["a.avi"])
    with pytest.raises(ValueError, match="not an ar archive"):
        ec.extract_clips(b"PK\x03\x04", ["a.avi"])
    truncated = _deb({"./data/a.avi": fake_clips["a.avi"]})[:-10]
    with pytest.raises(ValueError, match="truncated"):
        ec.extract_clips(truncated, ["a.avi"])


def test_main_writes_the_clips_from_a_local_package(
    fake_clips: dict[str, bytes], tmp_path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    deb = _deb(
        {"./data/a.avi": fake_clips["a.avi"], "./html/b.mp4.gz": gzip.compress(b"even clip")}
    )
    package = tmp_path / "pkg.deb"
    package.write_bytes(deb)
    monkeypatch.setattr(ec, "PACKAGE_SHA256", ec.sha256(deb))
    out = tmp_path / "clips"
    assert ec.main(["--out", str(out), "--package", str(package)]) == 0
    assert (out / "a.avi").read_bytes() == fake_clips["a.avi"]
    assert (out / "b.mp4").read_bytes() == b"even clip"
    package.write_bytes(deb + b"x")  # not the pinned package: refused, nothing new written
    (out / "a.avi").unlink()
    assert ec.main(["--out", str(out), "--package", str(package)]) == 1
    assert "SHA-256" in capsys.readouterr().err
    assert not (out / "a.avi").exists()
