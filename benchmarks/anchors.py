"""Classical anchors through PyAV: x264, x265 and (when built in) SVT-AV1, on the very frames pfnr
codes, at the same working size.

Frames go RGB -> yuv420p (BT.601, limited range, accurate rounding: the conversions of
``pfnr_codec.video``, the same code that reads the reference frames, so no colour bias from
swscale's fast defaults is charged to the anchors) -> encoder; the stream is the encoder's raw packets (in-band parameter sets, no container),
and its rate is the sum of packet sizes plus any extradata. Decoding goes back to RGB and is
compared with the input RGB frames. yuv420p needs even dimensions: odd working sizes are padded
by repeating the last row/column, and the decoded frames are cropped back, so the anchor codes
exactly the pixels pfnr codes and bpp is counted over the unpadded H x W.

Encoder banners are not counted: x265 runs with info=0 and x264's version SEI is removed from the
stream before it is measured and decoded. RGB PSNR of a yuv420p anchor has a ceiling (about 51 dB
on smooth content at CRF 0, lower on saturated colour) from chroma subsampling and the
limited-range conversion.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from benchmarks.common import Clip, Record, Timer, bits_per_pixel, quality
from pfnr_codec.errors import ConfigError
from pfnr_codec.video import frame_to_rgb, rgb_to_frame

os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its whole configuration at level 3


@dataclass(frozen=True)
class Anchor:
    """One classical encoder configuration; ``curve`` is what plots and tables call it."""

    codec: str  # family name in records: x264, x265, svtav1
    encoder: str  # FFmpeg encoder name
    decoder: str  # FFmpeg decoder name
    preset: str
    options: tuple[tuple[str, str], ...] = ()

    @property
    def curve(self) -> str:
        return f"preset {self.preset}" if self.preset.isdigit() else self.preset


ENCODERS = {
    "x264": ("libx264", "h264", ()),
    "x265": ("libx265", "hevc", (("x265-params", "log-level=error:info=0"),)),
    "svtav1": ("libsvtav1", "libdav1d", (("svtav1-params", "lp=2"),)),
}

# CRF sweeps span the rates a CPU-sized pfnr network reaches (~0.05 to ~1 bpp) and reach down to
# the low PSNR an under-trained pfnr point may have, so BD metrics have a range to average over.
CRF_SWEEPS = {
    "x264": {"full": [12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 51], "quick": [12, 24, 36, 48]},
    "x265": {"full": [12, 16, 20, 24, 28, 32, 36, 40, 44, 48, 51], "quick": [12, 24, 36, 48]},
    "svtav1": {"full": [12, 20, 28, 36, 44, 52, 58, 63], "quick": [20, 36, 52, 63]},
}
# SVT-AV1 has numbered presets (0 slowest .. 13 fastest); 8 and 4 stand in for medium/veryslow.
PRESETS = {
    "x264": {"full": ["medium", "veryslow"], "quick": ["medium"]},
    "x265": {"full": ["medium", "veryslow"], "quick": ["medium"]},
    "svtav1": {"full": ["8", "4"], "quick": ["8"]},
}


def available_anchors() -> list[str]:
    """Families whose encoder (and a decoder for it) exist in this PyAV build."""
    codecs = av.codecs_available
    families = []
    for family, (encoder, decoder, _) in ENCODERS.items():
        dec_ok = decoder in codecs or (family == "svtav1" and "av1" in codecs)
        if encoder in codecs and dec_ok:
            families.append(family)
    return families


def make_anchor(family: str, preset: str) -> Anchor:
    if family not in ENCODERS:
        raise ConfigError(f"unknown anchor {family!r}: expected one of {sorted(ENCODERS)}")
    encoder, decoder, options = ENCODERS[family]
    if family == "svtav1" and decoder not in av.codecs_available:
        decoder = "av1"
    return Anchor(family, encoder, decoder, preset, options)


@dataclass(frozen=True)
class AnchorResult:
    stream: bytes
    decoded: np.ndarray  # (T, H, W, 3) uint8, cropped to the input size
    encode_s: float
    decode_s: float
    padded: tuple[int, int]  # (rows, cols) added to reach even dimensions


def pad_even(frames: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """Repeat the last row/column so height and width are even (yuv420p needs it)."""
    _, h, w, _ = frames.shape
    ph, pw = h % 2, w % 2
    if ph or pw:
        frames = np.pad(frames, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return frames, (ph, pw)


def encode(frames: np.ndarray, anchor: Anchor, crf: int, fps: float = 25.0) -> tuple[bytes, float]:
    """Encode uint8 RGB frames (even H, W) to one raw elementary stream: (stream, seconds)."""
    _, h, w, _ = frames.shape
    ctx = av.CodecContext.create(anchor.encoder, "w")
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuv420p"
    rate = Fraction(fps).limit_denominator(1001)
    ctx.framerate, ctx.time_base = rate, 1 / rate
    ctx.options = {"crf": str(crf), "preset": anchor.preset, **dict(anchor.options)}
    packets: list[bytes] = []
    with Timer() as timer:
        for i, rgb in enumerate(frames):
            frame = rgb_to_frame(rgb, "yuv420p")
            frame.pts = i
            packets.extend(bytes(p) for p in ctx.encode(frame))
        packets.extend(bytes(p) for p in ctx.encode(None))
    stream = (ctx.extradata or b"") + b"".join(packets)
    if anchor.encoder == "libx264":
        stream = strip_x264_info(stream)
    return stream, timer.seconds


def strip_x264_info(stream: bytes) -> bytes:
    """Drop the SEI NAL unit in which x264 writes its version and options (~650 bytes).

    It carries no picture data, and x265 is told not to write its equivalent (info=0), so the
    anchors' rates count only what a decoder needs.
    """
    tag = stream.find(b"x264 - core")
    if tag < 0:
        return stream
    start = stream.rfind(b"\x00\x00\x01", 0, tag)
    if start < 0 or stream[start + 3] & 0x1F != 6:  # not inside an SEI NAL unit: leave alone
        return stream
    if start > 0 and stream[start - 1] == 0:
        start -= 1
    end = stream.find(b"\x00\x00\x01", tag)
    if end < 0:
        return stream[:start]
    if stream[end - 1] == 0:
        end -= 1
    return stream[:start] + stream[end:]


def decode(stream: bytes, anchor: Anchor, height: int, width: int) -> tuple[np.ndarray, float]:
    """Decode a raw stream from ``encode`` to uint8 RGB cropped to (height, width)."""
    ctx = av.CodecContext.create(anchor.decoder, "r")
    frames: list[np.ndarray] = []
    with Timer() as timer:
        for packet in [*ctx.parse(stream), *ctx.parse(None)]:
            frames.extend(frame_to_rgb(f) for f in ctx.decode(packet))
        frames.extend(frame_to_rgb(f) for f in ctx.decode(None))
    out = np.stack(frames)[:, :height, :width]
    return np.ascontiguousarray(out), timer.seconds


def run_anchor(frames: np.ndarray, anchor: Anchor, crf: int, fps: float = 25.0) -> AnchorResult:
    """Encode and decode one point; odd sizes are padded for coding and cropped back."""
    _, h, w, _ = frames.shape
    even, padded = pad_even(frames)
    stream, encode_s = encode(even, anchor, crf, fps)
    decoded, decode_s = decode(stream, anchor, h, w)
    if decoded.shape != frames.shape:
        raise RuntimeError(
            f"{anchor.encoder} crf {crf}: decoded {decoded.shape}, expected {frames.shape}"
        )
    return AnchorResult(stream, decoded, encode_s, decode_s, padded)


def measure(
    clip: Clip, anchor: Anchor, crfs: Sequence[int], device: str, versions: str
) -> list[Record]:
    """One record per CRF for ``anchor`` on ``clip``'s frames."""
    t, h, w = clip.shape
    records = []
    for crf in crfs:
        result = run_anchor(clip.frames, anchor, crf, clip.fps)
        psnr, msssim = quality(clip.frames, result.decoded)
        records.append(
            Record(
                clip=clip.name,
                codec=anchor.codec,
                settings={"curve": anchor.curve, "preset": anchor.preset, "crf": crf},
                frames=t,
                height=h,
                width=w,
                bytes=len(result.stream),
                bpp=bits_per_pixel(len(result.stream), t, h, w),
                psnr=psnr,
                ms_ssim=msssim,
                encode_s=result.encode_s,
                decode_s=result.decode_s,
                device=device,
                versions=versions,
                extra={"padded_rows_cols": list(result.padded), "pix_fmt": "yuv420p"},
            )
        )
    return records
