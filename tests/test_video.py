"""video.py: lossless round trips, frame ranges, one-line errors, atomic writes, resizing."""

from __future__ import annotations

import errno
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from pfnr_codec import video
from pfnr_codec.errors import InputError
from pfnr_codec.video import (
    frames_to_tensor,
    padded_for,
    parse_frame_range,
    probe_video,
    read_video,
    resize_frames,
    tensor_to_frames,
    write_video,
)

T, H, W = 6, 47, 33  # odd sizes on purpose


def smooth_clip(t: int = T, h: int = H, w: int = W, seed: int = 0) -> np.ndarray:
    """Moving colour waves plus mild noise: realistic enough for lossy codecs, never constant."""
    rng = np.random.default_rng(seed)
    k, y, x = np.mgrid[0:t, 0:h, 0:w].astype(np.float64)
    phase = rng.uniform(0, 6, 3)
    rgb = [
        128 + 90 * np.sin(x / 6 + k / 3 + phase[0]),
        128 + 90 * np.cos(y / 5 - k / 4 + phase[1]),
        128 + 80 * np.sin((x + y) / 9 + phase[2]),
    ]
    noisy = np.stack(rgb, axis=-1) + rng.normal(0, 3, (t, h, w, 3))
    return np.clip(noisy.round(), 0, 255).astype(np.uint8)


def av_write(path: Path, frames: np.ndarray, codec: str, pix_fmt: str, fmt: str) -> None:
    """Write a clip with PyAV directly, independent of video.write_video."""
    with av.open(str(path), mode="w", format=fmt) as container:
        stream = container.add_stream(codec, rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        for pixels in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        container.mux(stream.encode(None))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse))


@pytest.fixture
def clip() -> np.ndarray:
    return smooth_clip()


# ------------------------------------------------------------------------------------ reading


def test_reads_mkv_and_mp4_written_by_pyav(tmp_path: Path, clip: np.ndarray) -> None:
    av_write(tmp_path / "a.mkv", clip, "ffv1", "bgr0", "matroska")
    av_write(tmp_path / "a.mp4", clip, "libx264", "yuv444p", "mp4")
    frames, info = read_video(tmp_path / "a.mkv")
    assert np.array_equal(frames, clip)
    assert (info.width, info.height, info.frame_count, info.codec) == (W, H, T, "ffv1")
    assert info.fps == pytest.approx(25.0)
    lossy, info = read_video(tmp_path / "a.mp4")
    assert lossy.shape == clip.shape and info.codec == "h264"
    assert psnr(lossy, clip) > 30


def test_probe_agrees_with_decoding(tmp_path: Path) -> None:
    longer = smooth_clip(t=14, h=32, w=48)
    av_write(tmp_path / "b.mp4", longer, "libx264", "yuv420p", "mp4")  # has B-frames
    decoded, info = read_video(tmp_path / "b.mp4")
    assert probe_video(tmp_path / "b.mp4") == info
    assert info.frame_count == len(decoded) == 14


def test_frame_ranges(tmp_path: Path, clip: np.ndarray) -> None:
    path = write_video(clip, tmp_path / "c.mkv", 25)
    folder = write_video(clip, tmp_path / "frames", 25)
    for source in (path, folder):
        part, info = read_video(source, (1, 4))
        assert np.array_equal(part, clip[1:4]) and info.frame_count == T
        tail, _ = read_video(source, (4, None))
        assert np.array_equal(tail, clip[4:])
        last, _ = read_video(source, (0, T))
        assert np.array_equal(last, clip)
        for bad in [(2, T + 1), (T, None), (3, 3), (-1, 2)]:
            with pytest.raises(InputError, match=f"frames {bad[0]}:"):
                read_video(source, bad)
    with pytest.raises(InputError, match=rf"frames 2:9 outside video c.mkv \({T} frames\)"):
        read_video(path, (2, 9))


def test_parse_frame_range() -> None:
    assert parse_frame_range("10:50") == (10, 50)
    assert parse_frame_range(":8") == (0, 8)
    assert parse_frame_range("3:") == (3, None)
    assert parse_frame_range(" 0 : 1 ") == (0, 1)
    for bad in ["", "5", "a:b", "-1:4", "4:4", "9:2", "1:2:3"]:
        with pytest.raises(InputError):
            parse_frame_range(bad)


def test_folder_of_images_sorted_naturally(tmp_path: Path, clip: np.ndarray) -> None:
    folder = tmp_path / "shots"
    folder.mkdir()
    for i in (0, 1, 2, 10):  # 'img10' must come after 'img2'
        write_video(clip[min(i, T - 1) : min(i, T - 1) + 1], folder / f"img{i}.png", 25)
    (folder / "notes.txt").write_text("ignored")
    frames, info = read_video(folder)
    assert np.array_equal(frames, clip[[0, 1, 2, T - 1]])
    assert (info.frame_count, info.fps, info.codec) == (4, 25.0, "png")
    assert probe_video(folder) == info


def test_read_errors(tmp_path: Path, clip: np.ndarray) -> None:
    (tmp_path / "text.mp4").write_text("not a video\n")
    write_video(clip[:1], tmp_path / "still.png", 25)
    (tmp_path / "still.mp4").write_bytes((tmp_path / "still.png").read_bytes())
    (tmp_path / "empty").mkdir()
    (tmp_path / "none.y4m").write_bytes(b"YUV4MPEG2 W32 H32 F25:1 C444\n")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_video(clip[:1], mixed / "a1.png", 25)
    write_video(clip[:1, :20], mixed / "a2.png", 25)
    with av.open(str(tmp_path / "sound.mka"), mode="w", format="matroska") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        audio = av.AudioFrame.from_ndarray(
            np.zeros((1, 800), np.int16), format="s16", layout="mono"
        )
        audio.sample_rate = 8000
        container.mux(stream.encode(audio))
        container.mux(stream.encode(None))
    cases = {
        "missing.mp4": "no such file",
        "text.mp4": "not a video",
        "still.mp4": "still image",
        "empty": "no .png/.jpg",
        "none.y4m": "no frames",
        "mixed": "a2.png is 33x20, expected 33x47",
        "sound.mka": "no video stream",
    }
    for name, message in cases.items():
        with pytest.raises(InputError, match=message) as caught:
            read_video(tmp_path / name)
        assert "\n" not in str(caught.value)
    for name in ("missing.mp4", "text.mp4", "still.mp4", "empty", "sound.mka"):
        with pytest.raises(InputError):
            probe_video(tmp_path / name)


# ------------------------------------------------------------------------------------ writing


def test_lossless_round_trips(tmp_path: Path, clip: np.ndarray) -> None:
    for name in ("out.mkv", "folder", "slash/"):
        path = write_video(clip, str(tmp_path / name), 25)
        back, info = read_video(path)
        assert np.array_equal(back, clip), name
        assert info.frame_count == T
    names = sorted(p.name for p in (tmp_path / "folder").iterdir())
    assert names == [f"frame_{i:05d}.png" for i in range(T)]
    single = write_video(clip[2:3], tmp_path / "one.png", 25)
    assert np.array_equal(read_video(single)[0], clip[2:3])


def test_y4m_is_near_lossless(tmp_path: Path, clip: np.ndarray) -> None:
    path = write_video(clip, tmp_path / "out.y4m", 30000 / 1001)
    back, info = read_video(path)
    assert back.shape == clip.shape
    assert np.abs(back.astype(int) - clip.astype(int)).max() <= 2
    assert info.fps == pytest.approx(29.97, abs=0.01)
    assert path.read_bytes().startswith(b"YUV4MPEG2 W33 H47 F30000:1001")


def test_h264_outputs(tmp_path: Path, clip: np.ndarray) -> None:
    for name in ("out.mp4", "out.mov"):
        back, info = read_video(write_video(clip, tmp_path / name, 25))
        assert back.shape == clip.shape and info.codec == "h264"
        assert psnr(back, clip) > 33
    even = smooth_clip(h=32, w=48)
    back, _ = read_video(write_video(even, tmp_path / "420.mp4", 25, crf=14, pix_fmt="yuv420p"))
    assert psnr(back, even) > 30
    assert np.abs(back.astype(float).mean() - even.astype(float).mean()) < 0.5  # no colour bias
    # An odd size (47x33) is written one row and one column larger, the last ones repeated.
    back, _ = read_video(write_video(clip, tmp_path / "odd.mp4", 25, crf=14, pix_fmt="yuv420p"))
    assert back.shape[1:3] == padded_for("yuv420p", *clip.shape[1:3]) == (48, 34)
    assert psnr(back[:, : clip.shape[1], : clip.shape[2]], clip) > 25


def test_write_errors(tmp_path: Path, clip: np.ndarray) -> None:
    with pytest.raises(InputError, match=r"\.mkv"):
        write_video(clip, tmp_path / "out.gif", 25)
    with pytest.raises(InputError, match="does not exist"):
        write_video(clip, tmp_path / "nowhere" / "out.mkv", 25)
    with pytest.raises(InputError, match="one frame"):
        write_video(clip, tmp_path / "many.png", 25)
    with pytest.raises(InputError, match="uint8"):
        write_video(clip.astype(np.float32), tmp_path / "out.mkv", 25)
    assert list(tmp_path.iterdir()) == []


def test_failed_writes_leave_nothing_behind(
    tmp_path: Path, clip: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = write_video(clip[:2], tmp_path / "keep.y4m", 25).read_bytes()
    write_video(clip[:2], tmp_path / "frames", 25)
    before = sorted(p.name for p in tmp_path.rglob("*"))

    def disk_full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(video, "_rgb_to_yuv444", disk_full)
    monkeypatch.setattr(video, "_encode_png", disk_full)
    for target in ("keep.y4m", "frames", "fresh"):
        with pytest.raises(InputError, match="disk is full"):
            write_video(clip, tmp_path / target, 25)
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert (tmp_path / "keep.y4m").read_bytes() == old


def test_rewriting_a_folder_drops_stale_frames(tmp_path: Path, clip: np.ndarray) -> None:
    folder = write_video(clip, tmp_path / "frames", 25)
    (folder / "notes.txt").write_text("mine")
    write_video(clip[:2], folder, 25)
    assert sorted(p.name for p in folder.iterdir()) == [
        "frame_00000.png",
        "frame_00001.png",
        "notes.txt",
    ]
    assert np.array_equal(read_video(folder)[0], clip[:2])


# ----------------------------------------------------------------------------- pixels, tensors


def test_resize_shapes_and_determinism(clip: np.ndarray) -> None:
    for h, w in [(20, 16), (94, 66), (60, 20), (H, W)]:
        out = resize_frames(clip, h, w)
        assert out.shape == (T, h, w, 3) and out.dtype == np.uint8
        assert np.array_equal(out, resize_frames(clip, h, w))
    same = resize_frames(clip, H, W)
    assert np.array_equal(same, clip) and same is not clip


def test_resize_keeps_constant_frames_constant() -> None:
    flat = np.empty((2, 45, 61, 3), dtype=np.uint8)
    flat[..., 0], flat[..., 1], flat[..., 2] = 17, 130, 251
    for h, w in [(15, 20), (22, 31), (90, 122), (30, 100)]:
        out = resize_frames(flat, h, w)
        assert np.array_equal(out, np.broadcast_to(flat[:, :1, :1], out.shape))


def test_area_downscale_averages_blocks() -> None:
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 256, (3, 8, 12, 3), dtype=np.uint8)
    out = resize_frames(frames, 4, 6)
    blocks = frames.reshape(3, 4, 2, 6, 2, 3).astype(np.float64).mean(axis=(2, 4))
    assert np.abs(out.astype(np.float64) - blocks).max() <= 0.5 + 1e-6


def test_tensor_round_trip(clip: np.ndarray) -> None:
    x = frames_to_tensor(clip)
    assert x.shape == (T, 3, H, W) and x.dtype == torch.float32
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert np.array_equal(tensor_to_frames(x), clip)
    assert np.array_equal(tensor_to_frames(x + 0.4 / 255), clip)  # rounds to nearest level
    wild = tensor_to_frames(torch.tensor([-0.5, 1.5]).view(1, 1, 1, 2).expand(1, 3, 1, 2))
    assert wild[0, 0, :, 0].tolist() == [0, 255]


def test_shipped_samples() -> None:
    samples = Path(__file__).resolve().parent.parent / "samples"
    for name, (h, w) in {"bunny.mp4": (180, 320), "bikes.mp4": (136, 320)}.items():
        frames, info = read_video(samples / name)
        assert frames.shape == (24, h, w, 3)
        assert (info.fps, info.codec) == (25.0, "h264")
        assert (samples / name).stat().st_size < 500_000
        assert 10 < frames.mean() < 245 and frames.std() > 10  # real pictures, not blank


def test_the_source_bit_depth_is_reported(tmp_path: Path, clip: np.ndarray) -> None:
    """A 10-bit source is read as 8-bit RGB; its depth is kept so encode can say so."""
    even = smooth_clip(h=32, w=48)
    av_write(tmp_path / "ten.mkv", even, "ffv1", "yuv420p10le", "matroska")
    frames, info = read_video(tmp_path / "ten.mkv")
    assert info.bit_depth == 10 and frames.dtype == np.uint8
    assert read_video(write_video(clip, tmp_path / "eight.mkv", 25))[1].bit_depth == 8


def test_reading_at_a_size_equals_resizing_what_was_read(tmp_path: Path, monkeypatch) -> None:
    """Resized a few frames at a time while decoding (several chunks here), a video comes out
    exactly as if it had been read whole and resized: from a file and from a folder."""
    longer = smooth_clip(t=11, h=40, w=56, seed=3)
    monkeypatch.setattr(video, "_SINK_CHUNK_VALUES", 3 * 40 * 56 * 3)  # chunks of three frames
    for source in (
        write_video(longer, tmp_path / "d.mkv", 25),
        write_video(longer, tmp_path / "f", 25),
    ):
        for size in ((20, 28), (17, 90), (40, 56)):
            whole, info = read_video(source, (1, 10))
            chunked, chunked_info = read_video(source, (1, 10), size)
            assert np.array_equal(chunked, resize_frames(whole, *size)), (source, size)
            assert chunked_info == info


def test_reading_at_a_size_never_holds_the_whole_video(tmp_path: Path, monkeypatch) -> None:
    """numpy's allocations (which tracemalloc sees) stay far below the decoded video's size: only
    a chunk of frames (four here; 32 MiB of them by default) is held at the source's size."""
    import tracemalloc

    big = smooth_clip(t=24, h=240, w=320, seed=4)
    path = write_video(big, tmp_path / "big.mkv", 25)
    monkeypatch.setattr(video, "_SINK_CHUNK_VALUES", 4 * big[0].size)
    tracemalloc.start()
    try:
        frames, _ = read_video(path, size=(24, 32))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert frames.shape == (24, 24, 32, 3)
    assert peak < big.nbytes / 2, (peak, big.nbytes)
