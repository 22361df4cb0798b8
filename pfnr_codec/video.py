"""Video in and out: frames are uint8 (T, H, W, 3) RGB arrays everywhere outside this module.

Reading goes through PyAV (FFmpeg) so any container FFmpeg knows works, plus folders of PNG/JPEG
frames. Writing picks the format from the output path and always writes a temporary file (or
folder) beside the target and renames it, so a failed write never leaves a half-written output.
PNG files are encoded and decoded by PyAV too, which keeps Pillow out of the dependencies.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import uuid
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
import torch
import torch.nn.functional as F
from av.video.reformatter import Interpolation

from pfnr_codec.errors import InputError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
WRITE_CHOICES = "a folder (PNG frames), .png (one frame), .y4m, .mkv (FFV1), .mp4/.mov (H.264)"
FOLDER_FPS = 25.0
_FRAME_NAME = re.compile(r"^frame_(\d{5,})\.png$")
_RESIZE_BATCH_VALUES = 1 << 25  # float32 values per resize batch: bounds memory on long videos
_SINK_CHUNK_VALUES = 1 << 25  # bytes of decoded frames resized at a time while reading
# swscale's default YUV 4:2:0 -> RGB path replicates chroma and truncates: about one level of
# bias and up to ~13 dB lost on saturated colour. Full chroma interpolation with accurate,
# bit-exact rounding costs ~3x the conversion time (still ~150 frames/s at 720p on one core).
SWS_FLAGS = (
    Interpolation.BICUBIC
    | Interpolation.ACCURATE_RND
    | Interpolation.BITEXACT
    | Interpolation.FULL_CHR_H_INT
    | Interpolation.FULL_CHR_H_INP
)
_AVCOL_SPC_SMPTE170M = 6  # BT.601 matrix, as FFmpeg's AVColorSpace numbers it
_AVCOL_RANGE_MPEG = 1


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds; fps and size are the source's, before any resizing."""

    path: str
    width: int
    height: int
    fps: float
    frame_count: int
    codec: str
    bit_depth: int = 8  # bits per sample of the source; frames are read as 8-bit RGB


# ---------------------------------------------------------------------------------------- reading


def probe_video(path: Path) -> VideoInfo:
    """Size, rate and frame count without decoding the pixels.

    For files the count is the number of video packets (one per frame in the containers we meet);
    `read_video`, which decodes, is the authority when the two could differ.
    """
    path = Path(path)
    if path.is_dir():
        images = _list_images(path)
        return _folder_info(path, images, _read_image(images[0]))
    container = _open_input(path)
    try:
        stream = container.streams.video[0]
        count = sum(1 for packet in container.demux(stream) if packet.size > 0)
        return _stream_info(path, stream, count)
    except av.FFmpegError as exc:
        raise InputError(f"cannot read {path.name}: {exc}") from exc
    finally:
        container.close()


def read_video(
    path: Path,
    frames: tuple[int, int | None] | None = None,
    size: tuple[int, int] | None = None,
) -> tuple[np.ndarray, VideoInfo]:
    """Decode a video (or a folder of images) to uint8 (T, H, W, 3) RGB.

    `frames` is a half-open [start, end) range of frame indices (end None: to the last frame).
    Frames before `start` are decoded and dropped (seeking is not frame-exact in every format).
    With `size` (height, width) the frames come resized as `resize_frames` resizes them, a few at
    a time as they are decoded: a long video is never held whole at its own resolution. `info`
    describes the source either way.
    """
    path = Path(path)
    start, end = frames if frames is not None else (0, None)
    if start < 0 or (end is not None and end <= start):
        raise InputError(f"frames {_span(start, end)} is not a valid range for {path.name}")
    if path.is_dir():
        return _read_folder(path, start, end, _FrameSink(size))
    container = _open_input(path)
    kept = _FrameSink(size)
    index, reached_end = 0, True
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for frame in container.decode(stream):
            if end is not None and index >= end:
                reached_end = False
                break
            if index >= start:
                kept.add(frame_to_rgb(frame))
            index += 1
        info = _stream_info(path, stream, index)
    except av.FFmpegError as exc:
        raise InputError(f"cannot decode {path.name}: {exc}") from exc
    finally:
        container.close()
    if not reached_end:  # stopped at `end`: the total comes from counting packets
        info = replace(info, frame_count=max(probe_video(path).frame_count, index))
    elif index == 0:
        raise InputError(f"video {path.name} has no frames")
    _check_inside(path, start, end, info.frame_count)
    return kept.frames(), info


def parse_frame_range(text: str) -> tuple[int, int | None]:
    """'START:END', ':END' or 'START:' (half-open, 0-based) -> (start, end or None)."""
    match = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", text)
    if match is None:
        raise InputError(f"frame range must look like START:END, :END or START:, got {text!r}")
    start = int(match.group(1)) if match.group(1) else 0
    end = int(match.group(2)) if match.group(2) else None
    if end is not None and end <= start:
        raise InputError(f"frame range {text!r} is empty: END must be larger than START")
    return start, end


def _open_input(path: Path) -> av.container.InputContainer:
    """Open a file FFmpeg can demux and that holds a video stream, or raise InputError."""
    if not path.exists():
        raise InputError(f"no such file: {path}")
    if not path.is_file():
        raise InputError(f"{path} is not a file or a folder of images")
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError) as exc:
        raise InputError(f"{path.name} is not a video FFmpeg can read ({exc})") from exc
    fmt = container.format.name
    is_image = fmt == "image2" or fmt.endswith("_pipe")
    if is_image and path.suffix.lower() not in IMAGE_SUFFIXES:
        container.close()
        raise InputError(f"{path.name} is a still image ({fmt}), not a video")
    if not container.streams.video:
        container.close()
        raise InputError(f"{path.name} has no video stream")
    return container


def _stream_info(path: Path, stream: av.video.stream.VideoStream, count: int) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else FOLDER_FPS
    cc = stream.codec_context
    depth = max((c.bits for c in cc.format.components), default=8) if cc.format else 8
    return VideoInfo(str(path), cc.width, cc.height, fps, count, cc.name, depth)


def _span(start: int, end: int | None) -> str:
    return f"{start}:{'' if end is None else end}"


def _check_inside(path: Path, start: int, end: int | None, count: int) -> None:
    if start >= count or (end is not None and end > count):
        raise InputError(f"frames {_span(start, end)} outside video {path.name} ({count} frames)")


def _stack(frames: list[np.ndarray]) -> np.ndarray:
    """np.stack that frees each frame as it is copied, so peak memory stays near one video."""
    out = np.empty((len(frames), *frames[0].shape), dtype=np.uint8)
    for i in range(len(frames)):
        out[i] = frames[i]
        frames[i] = None  # type: ignore[call-overload]
    return out


class _FrameSink:
    """Collects decoded frames; with a target size it resizes them a chunk at a time (a chunk is
    a few frames: `_SINK_CHUNK_VALUES` bytes), keeping only the resized ones."""

    def __init__(self, size: tuple[int, int] | None) -> None:
        self.size = size
        self.pending: list[np.ndarray] = []
        self.pending_values = 0
        self.resized: list[np.ndarray] = []

    def add(self, frame: np.ndarray) -> None:
        if self.pending and frame.shape != self.pending[0].shape:
            self._flush()  # np.stack needs one shape; the caller decides what a change means
        self.pending.append(frame)
        self.pending_values += frame.size
        if self.size is not None and self.pending_values >= _SINK_CHUNK_VALUES:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            chunk = _stack(self.pending)
            self.resized.append(chunk if self.size is None else resize_frames(chunk, *self.size))
            self.pending, self.pending_values = [], 0

    def frames(self) -> np.ndarray:
        """Every frame added, resized when a size was given."""
        self._flush()
        if not self.resized:
            raise InputError("no frames were decoded")
        if len(self.resized) == 1:
            return self.resized[0]
        out = np.empty((sum(len(c) for c in self.resized), *self.resized[0].shape[1:]), np.uint8)
        at = 0
        for i, chunk in enumerate(self.resized):
            if chunk.shape[1:] != out.shape[1:]:
                raise InputError(
                    f"the frame size changes from {out.shape[2]}x{out.shape[1]} to "
                    f"{chunk.shape[2]}x{chunk.shape[1]} at frame {at}; pfnr needs one size"
                )
            out[at : at + len(chunk)] = chunk
            at += len(chunk)
            self.resized[i] = None  # type: ignore[call-overload]
        return out


def frame_to_rgb(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame -> uint8 (H, W, 3) RGB, honouring its colour tags (untagged: BT.601)."""
    return frame.to_ndarray(format="rgb24", interpolation=SWS_FLAGS)


def rgb_to_frame(pixels: np.ndarray, pix_fmt: str = "rgb24") -> av.VideoFrame:
    """uint8 (H, W, 3) RGB -> a frame in `pix_fmt`; YUV formats get BT.601 limited range."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
    if not pix_fmt.startswith("yuv"):
        return frame
    return frame.reformat(
        format=pix_fmt, dst_colorspace="itu601", dst_color_range="MPEG", interpolation=SWS_FLAGS
    )


def _natural_key(name: str) -> list[int | str]:
    """'f2.png' before 'f10.png': digit runs compare as numbers."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _list_images(folder: Path) -> list[Path]:
    images = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        raise InputError(f"folder {folder} holds no .png/.jpg frames")
    return sorted(images, key=lambda p: _natural_key(p.name))


def _folder_info(folder: Path, images: list[Path], first: np.ndarray) -> VideoInfo:
    """A folder plays at FOLDER_FPS; its codec reads 'png', 'jpeg' or 'jpeg+png'."""
    codec = "+".join(sorted({"png" if p.suffix.lower() == ".png" else "jpeg" for p in images}))
    return VideoInfo(str(folder), first.shape[1], first.shape[0], FOLDER_FPS, len(images), codec)


def _read_image(path: Path) -> np.ndarray:
    try:
        with av.open(str(path), mode="r") as container:
            frame = next(container.decode(video=0))
            return frame_to_rgb(frame)
    except (av.FFmpegError, OSError, StopIteration, IndexError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from exc


def _read_folder(
    folder: Path, start: int, end: int | None, sink: _FrameSink
) -> tuple[np.ndarray, VideoInfo]:
    images = _list_images(folder)
    _check_inside(folder, start, end, len(images))
    chosen = images[start:end]
    first = _read_image(chosen[0])
    for i, image in enumerate(chosen):
        pixels = first if i == 0 else _read_image(image)
        if pixels.shape != first.shape:
            raise InputError(
                f"frame {image.name} is {pixels.shape[1]}x{pixels.shape[0]}, expected "
                f"{first.shape[1]}x{first.shape[0]} like {chosen[0].name}"
            )
        sink.add(pixels)
    return sink.frames(), _folder_info(folder, images, first)


# ------------------------------------------------------------------------------ pixels <-> tensors


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize uint8 (T, H, W, 3) frames; deterministic on any CPU.

    Shrinking uses area averaging (no aliasing), enlarging uses bicubic; a frame that shrinks along
    one axis and grows along the other is first area-shrunk, then bicubic-enlarged.
    """
    _check_frames(frames)
    t, h, w, _ = frames.shape
    if height < 1 or width < 1:
        raise InputError(f"resize target must be at least 1x1, got {width}x{height}")
    if (h, w) == (height, width):
        return frames.copy()
    mid = (min(h, height), min(w, width))
    out = np.empty((t, height, width, 3), dtype=np.uint8)
    batch = max(1, _RESIZE_BATCH_VALUES // (3 * max(h * w, height * width)))
    for i in range(0, t, batch):
        x = frames_to_tensor(frames[i : i + batch])
        if mid != (h, w):
            x = F.interpolate(x, size=mid, mode="area")
        if mid != (height, width):
            x = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False)
        out[i : i + batch] = tensor_to_frames(x)
    return out


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float32 (T, 3, H, W) in [0, 1]."""
    return unit_float(torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2))


def channels_first(frames: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3) -> uint8 (T, 3, H, W), contiguous: the layout training reads, a quarter
    of the float32 frames' memory (training converts a batch at a time: `unit_float`)."""
    return np.ascontiguousarray(frames.transpose(0, 3, 1, 2))


def unit_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames -> float32 in [0, 1] (value / 255); float frames pass through unchanged."""
    return frames.float().div(255.0) if frames.dtype == torch.uint8 else frames


def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
    """float (T, 3, H, W) in [0, 1] -> uint8 (T, H, W, 3); values outside [0, 1] are clipped."""
    x = (x.detach().float().cpu() * 255.0).round().clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()


def _check_frames(frames: np.ndarray) -> None:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        raise InputError(f"frames must be a uint8 numpy array, got {type(frames).__name__}")
    if frames.ndim != 4 or frames.shape[-1] != 3 or min(frames.shape[:3]) < 1:
        raise InputError(
            f"frames must have shape (T, H, W, 3) with T, H, W >= 1, got {frames.shape}"
        )


# ---------------------------------------------------------------------------------------- writing


def write_video(
    frames: np.ndarray, path: Path | str, fps: float, *, crf: int = 12, pix_fmt: str = "yuv444p"
) -> Path:
    """Write uint8 (T, H, W, 3) frames; the path picks the format (see WRITE_CHOICES).

    - folder (path ending in '/', an existing folder, or no suffix): frame_00000.png ... lossless.
      Writing into an existing folder replaces its frame_NNNNN.png files and nothing else.
    - .png: one lossless frame (T must be 1).
    - .y4m: YUV4MPEG2 4:4:4, BT.601 full range; the RGB -> YUV rounding moves colours by about
      one level, so it is near-lossless, not lossless.
    - .mkv: FFV1 lossless RGB; reading it back gives the same uint8 RGB.
    - .mp4/.mov: H.264 (libx264, `crf`, `pix_fmt` yuv444p or yuv420p), BT.601 limited range;
      lossy. yuv420p needs even sizes: an odd height or width gets its last row or column
      repeated once (see `padded_for`).
    Returns the path written.
    """
    _check_frames(frames)
    as_folder = str(path).endswith(("/", os.sep))
    path = Path(path)
    suffix = path.suffix.lower()
    as_folder = as_folder or path.is_dir() or suffix == ""
    if not as_folder and suffix not in (".png", ".y4m", ".mkv", ".mp4", ".mov"):
        raise InputError(f"cannot write {path.name}: choose {WRITE_CHOICES}")
    if not as_folder and suffix == ".png" and frames.shape[0] != 1:
        raise InputError(
            f"{path.name}: a .png holds one frame, got {frames.shape[0]}; name a folder"
        )
    if not fps > 0:
        raise InputError(f"fps must be positive, got {fps}")
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise InputError(f"cannot write {path}: folder {parent} is not writable")
    if as_folder:
        return _write_png_folder(frames, path)
    tmp = parent / f".{path.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        if suffix == ".png":
            tmp.write_bytes(_encode_png(frames[0]))
        elif suffix == ".y4m":
            _write_y4m(frames, tmp, fps)
        elif suffix == ".mkv":
            # This FFmpeg's FFV1 lacks 8-bit gbrp; bgr0 (RGB plus a pad byte) is lossless too.
            _encode_stream(frames, tmp, "matroska", "ffv1", fps, "bgr0", {})
        else:
            _write_h264(frames, tmp, fps, suffix.lstrip("."), crf, pix_fmt)
        _fsync(tmp)
        os.replace(tmp, path)
    except (OSError, av.FFmpegError) as exc:
        raise InputError(f"cannot write {path}: {_reason(exc)}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "the disk is full"
    return str(exc)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _encode_png(pixels: np.ndarray) -> bytes:
    """One (H, W, 3) uint8 frame -> PNG file bytes (lossless rgb24)."""
    cc = av.CodecContext.create("png", "w")
    cc.width, cc.height, cc.pix_fmt = pixels.shape[1], pixels.shape[0], "rgb24"
    packets = cc.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")) + cc.encode(None)
    return b"".join(bytes(p) for p in packets)


def _write_png_folder(frames: np.ndarray, folder: Path) -> Path:
    """Write frame_00000.png ... into a temp folder, then move it (or its files) into place."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"cannot write frames to {folder}: a file has that name")
    tmp = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        tmp.mkdir()
        names = [f"frame_{i:05d}.png" for i in range(frames.shape[0])]
        for name, pixels in zip(names, frames, strict=True):
            (tmp / name).write_bytes(_encode_png(pixels))
        if not folder.exists():
            os.replace(tmp, folder)
            return folder
        for name in names:
            os.replace(tmp / name, folder / name)
        for stale in folder.iterdir():
            match = _FRAME_NAME.match(stale.name)
            if match and int(match.group(1)) >= len(names):
                stale.unlink()
    except (OSError, av.FFmpegError) as exc:
        raise InputError(f"cannot write frames to {folder}: {_reason(exc)}") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _rate(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def _rgb_to_yuv444(frames: np.ndarray) -> np.ndarray:
    """uint8 (T, H, W, 3) RGB -> uint8 (T, 3, H, W) Y, Cb, Cr planes: BT.601 full range (JFIF)."""
    m = np.array(
        [[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
        dtype=np.float32,
    )
    yuv = np.einsum("ck,thwk->tchw", m, frames.astype(np.float32))
    yuv[:, 1:] += 128.0
    return np.clip(np.rint(yuv), 0, 255).astype(np.uint8)


def _write_y4m(frames: np.ndarray, tmp: Path, fps: float) -> None:
    with open(tmp, "wb") as f:
        write_y4m_stream(frames, f, fps)


def write_y4m_stream(frames: np.ndarray, stream: BinaryIO, fps: float) -> None:
    """YUV4MPEG2 by hand: a text header and raw planes; FFmpeg reads XCOLORRANGE=FULL back.
    Writes to any binary stream (a file, or stdout for a pipe into ffmpeg or a player)."""
    _check_frames(frames)
    t, h, w, _ = frames.shape
    rate = _rate(fps)
    header = f"YUV4MPEG2 W{w} H{h} F{rate.numerator}:{rate.denominator} Ip A1:1 C444"
    stream.write(f"{header} XCOLORRANGE=FULL\n".encode("ascii"))
    batch = max(1, _RESIZE_BATCH_VALUES // (3 * h * w))
    for i in range(0, t, batch):
        for planes in _rgb_to_yuv444(frames[i : i + batch]):
            stream.write(b"FRAME\n")
            stream.write(planes.tobytes())


def padded_for(pix_fmt: str, height: int, width: int) -> tuple[int, int]:
    """The size an .mp4 of `pix_fmt` is written at (yuv420p rounds odd sizes up)."""
    if pix_fmt == "yuv420p":
        return height + height % 2, width + width % 2
    return height, width


def output_exists(path: Path | str) -> bool:
    """Whether writing `path` would replace something: a file, or frames in a folder."""
    path = Path(path)
    if path.is_dir():
        return any(path.glob("frame_*.png"))
    return path.exists()


def _write_h264(
    frames: np.ndarray, tmp: Path, fps: float, fmt: str, crf: int, pix_fmt: str
) -> None:
    if pix_fmt not in ("yuv444p", "yuv420p"):
        raise InputError(f"H.264 pix_fmt must be yuv444p or yuv420p, got {pix_fmt}")
    height, width = padded_for(pix_fmt, *frames.shape[1:3])  # repeat the last row / column
    pad = ((0, 0), (0, height - frames.shape[1]), (0, width - frames.shape[2]), (0, 0))
    frames = np.pad(frames, pad, mode="edge")
    _encode_stream(frames, tmp, fmt, "libx264", fps, pix_fmt, {"crf": str(crf)})


def _encode_stream(
    frames: np.ndarray, tmp: Path, fmt: str, codec: str, fps: float, pix_fmt: str,
    options: dict[str, str],
) -> None:  # fmt: skip
    """Encode RGB frames with PyAV; YUV output is converted and tagged as BT.601 limited range."""
    # bitexact: no random segment ids or dates in the container, so FFV1/.mkv bytes repeat.
    with av.open(str(tmp), mode="w", format=fmt, options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(codec, rate=_rate(fps))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        stream.options = options
        yuv = pix_fmt.startswith("yuv")
        if yuv:
            stream.codec_context.colorspace = _AVCOL_SPC_SMPTE170M
            stream.codec_context.color_range = _AVCOL_RANGE_MPEG
        for pixels in frames:
            container.mux(stream.encode(rgb_to_frame(pixels, pix_fmt)))
        container.mux(stream.encode(None))
