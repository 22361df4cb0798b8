"""What every benchmark shares: the per-point record, machine facts, clip loading and writers.

One record per measured point (STYLE.md): plots and tables are made from records only, so a
result file is enough to redraw or re-check any figure. The rate is always from real bytes.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CLIPS_DIR = (REPO_ROOT / ".." / "shared" / "data" / "clips").resolve()
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
VIDEO_SUFFIXES = {".mp4", ".mkv", ".webm", ".avi", ".mov", ".y4m", ".mpg"}


@dataclass
class Record:
    """One measured point. ``codec`` is the family (pfnr, x264, ...); ``settings`` what varies."""

    clip: str
    codec: str
    settings: dict[str, Any]
    frames: int
    height: int
    width: int
    bytes: int
    bpp: float
    psnr: float
    ms_ssim: float
    encode_s: float
    decode_s: float
    device: str
    versions: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        return cls(**data)

    @property
    def label(self) -> str:
        """The curve this point belongs to, e.g. 'x264 medium' or 'pfnr cpu'."""
        curve = self.settings.get("curve")
        return f"{self.codec} {curve}" if curve else self.codec


@dataclass(frozen=True)
class Clip:
    """Frames of one clip at the working size every codec in a run is measured at."""

    name: str
    path: Path
    frames: np.ndarray  # (T, H, W, 3) uint8
    fps: float
    original_height: int
    original_width: int

    @property
    def shape(self) -> tuple[int, int, int]:
        t, h, w, _ = self.frames.shape
        return t, h, w


def find_clips(paths: Sequence[Path] | None = None) -> list[Path]:
    """The given video paths (folders expanded), or every video in the shared clips folder."""
    roots = list(paths) if paths else [DEFAULT_CLIPS_DIR]
    found: list[Path] = []
    for root in roots:
        if root.is_dir():
            found.extend(sorted(p for p in root.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES))
        else:
            found.append(root)
    return found


def load_clip(
    path: Path,
    frames: tuple[int, int] | None = None,
    size: tuple[int, int] | None = None,
) -> Clip:
    """Read a clip (optionally a frame range) and resize it to ``size`` = (height, width)."""
    from pfnr_codec.video import read_video, resize_frames

    video, info = read_video(path, frames)
    if size is not None and (video.shape[1], video.shape[2]) != tuple(size):
        video = resize_frames(video, size[0], size[1])
    return Clip(path.stem, path, video, float(info.fps), info.height, info.width)


def quality(reference: np.ndarray, decoded: np.ndarray) -> tuple[float, float]:
    """(mean RGB PSNR per frame, mean MS-SSIM) of decoded against reference frames."""
    from pfnr_codec.metrics import ms_ssim, psnr

    return float(psnr(reference, decoded)), float(ms_ssim(reference, decoded))


def bits_per_pixel(num_bytes: int, frames: int, height: int, width: int) -> float:
    from pfnr_codec.metrics import bpp

    return float(bpp(num_bytes, frames, height, width))


class Timer:
    """Wall-clock seconds of a block, with CUDA synchronized at both ends when it is in use."""

    def __enter__(self) -> Timer:
        _synchronize()
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        _synchronize()
        self.seconds = time.perf_counter() - self.start


def _synchronize() -> None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: str = "cpu") -> str:
    """A human name for the device results were measured on."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    return f"cpu ({_cpu_model()})"


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """Hardware and software facts to print with every result."""
    import av
    import torch

    import pfnr_codec

    ffmpeg = {name: ".".join(map(str, v)) for name, v in av.library_versions.items()}
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device_name(device),
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            "pfnr": pfnr_codec.__version__,
            "torch": torch.__version__,
            "av": av.__version__,
            "numpy": np.__version__,
        },
        "ffmpeg": ffmpeg,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def versions_string() -> str:
    """Short versions column for records: 'pfnr 0.1.0, torch 2.x, av 1x, ffmpeg avcodec 62.x'."""
    import av
    import torch

    import pfnr_codec

    avcodec = ".".join(map(str, av.library_versions["libavcodec"]))
    return f"pfnr {pfnr_codec.__version__}, torch {torch.__version__}, av {av.__version__}, " + (
        f"avcodec {avcodec}"
    )


def write_records(records: Sequence[Record], out_dir: Path, stem: str, machine: dict) -> list[Path]:
    """Write ``stem.json`` ({machine, records}) and ``stem.csv`` (one row per record)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(
        json.dumps(
            {"machine": machine, "records": [r.to_dict() for r in records]},
            indent=1,
            default=_json_default,
        )
        + "\n"
    )
    csv_path = out_dir / f"{stem}.csv"
    rows = [_flat(r.to_dict()) for r in records]
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return [json_path, csv_path]


def read_records(path: Path) -> tuple[dict, list[Record]]:
    """Inverse of write_records for the JSON file: (machine, records)."""
    data = json.loads(path.read_text())
    return data["machine"], [Record.from_dict(r) for r in data["records"]]


def _flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def markdown_table(rows: Iterable[Sequence[Any]], header: Sequence[str]) -> str:
    """A GitHub markdown table; floats get 4 significant digits unless pre-formatted."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_cell(v) for v in row) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, float | np.floating):
        if not np.isfinite(value):
            return "-"
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def machine_markdown(machine: dict[str, Any]) -> str:
    """The machine block every markdown report starts with."""
    v = machine["versions"]
    ffmpeg = ", ".join(f"{k} {val}" for k, val in machine["ffmpeg"].items() if k == "libavcodec")
    return (
        f"- Machine: {machine['cpu']}, {machine['cores']} cores, torch threads "
        f"{machine['torch_threads']}; device: {machine['device']}\n"
        f"- Versions: pfnr {v['pfnr']}, torch {v['torch']}, PyAV {v['av']} ({ffmpeg}), "
        f"numpy {v['numpy']}, Python {machine['python']}\n"
        f"- Date: {machine['date']}"
    )


def write_markdown(
    path: Path, title: str, machine: dict[str, Any], sections: Sequence[str]
) -> Path:
    """A report: title, machine block, then the given markdown sections."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = [f"# {title}", "", machine_markdown(machine), ""]
    for section in sections:
        body.extend([section, ""])
    path.write_text("\n".join(body))
    return path
