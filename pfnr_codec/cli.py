"""The `pfnr` command: encode, decode, info, demo.

Thin on purpose: each command parses options, calls `api`, and prints. Results go to stdout (a rich
table, or exactly one JSON object with --json); progress, warnings and errors go to stderr. Errors are
mapped to exit codes in one place (`main`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__
from .errors import PfnrError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="pfnr: many videos in one progressive Fourier neural representation.",
)
INTERRUPTED = 130
# Piped output is not cut to 80 columns: tables stay whole for whoever reads the file.
out = Console() if sys.stdout.isatty() else Console(width=160)
err = Console(stderr=True)
DEBUG = {"on": bool(os.environ.get("PFNR_DEBUG"))}

ArchiveOpt = Annotated[Path, typer.Option("--archive", "-a", help="Archive file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu or cuda.")]


def _range(text: str | None) -> tuple[int, int | None] | None:
    from .video import parse_frame_range

    return None if text is None else parse_frame_range(text)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(title: str) -> Table:
    """Compact tables: they must stay readable in an 80-column terminal."""
    return Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")


def _session_table(title: str, sessions: list[Any], with_time: bool) -> Table:
    table = _table(title)
    columns = ["#", "name", "source", "frames", "fps", "PSNR", "MS-SSIM", "BPP", "new w."]
    columns += ["reused", "bytes"] + (["time s"] if with_time else [])
    for column in columns:
        if column in ("name", "source"):
            table.add_column(column, overflow="fold", min_width=8)
        else:
            table.add_column(column, justify="right", no_wrap=True)
    for s in sessions:
        row = [str(s.session), s.name, s.source, str(s.frames), _fmt(s.fps), _fmt(s.psnr)]
        row += [_fmt(s.ms_ssim, 4), _fmt(s.bpp, 4), f"{s.new_weights:,}", f"{s.reused_share:.0%}"]
        row += [f"{s.bytes:,}"] + ([_fmt(s.encode_seconds, 1)] if with_time else [])
        table.add_row(*row)
    return table


class _Bars:
    """A rich progress bar per session: epoch, loss, PSNR, learning rate, ETA."""

    def __init__(self, quiet: bool) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[epochs]}"),
            TextColumn("{task.fields[psnr]}"),
            TimeRemainingColumn(),
            console=err,
            disable=quiet,
            transient=False,
        )
        self.task: TaskID | None = None
        self.label = ""

    def start(self, label: str) -> None:
        """Name the next bar; it appears with the first epoch, after the input checks passed."""
        self.label, self.task = label, None

    def update(self, p: Any) -> None:
        if self.task is None:
            self.task = self.progress.add_task(self.label, total=None, psnr="", epochs="")
        label = "PSNR" if p.phase == "train" else "fine-tune PSNR"
        note = f"{label} {p.psnr:6.2f} dB  lr {p.learning_rate:.1e}"
        if p.recoveries:
            note += f"  recovered x{p.recoveries}"
        self.progress.update(
            self.task,
            completed=p.epoch,
            total=p.epochs,
            psnr=note,
            epochs=f"epoch {p.epoch}/{p.epochs}",
        )


@app.command()
def encode(
    videos: Annotated[list[Path], typer.Argument(help="Videos (or folders of frames), in order.")],
    archive: ArchiveOpt = Path("archive.pfnr"),
    preset: Annotated[
        str | None, typer.Option(help="cpu, cpu-time, paper or tiny (new archives).")
    ] = None,
    quality: Annotated[
        int | None,
        typer.Option(
            "--quality",
            min=1,
            max=7,
            help="1..7 (new archives; default 4): each level up about doubles the bits.",
        ),
    ] = None,
    capacity: Annotated[
        float | None, typer.Option(help="Share of each layer a session uses.")
    ] = None,
    bits: Annotated[int | None, typer.Option(help="Weight quantization bits, 2..8.")] = None,
    growth: Annotated[
        float | None,
        typer.Option(help="Share of the base widths a session adds when the network is full."),
    ] = None,
    epochs: Annotated[int | None, typer.Option(help="Training epochs per session.")] = None,
    minutes: Annotated[float | None, typer.Option(help="Training time budget per session.")] = None,
    frames: Annotated[str | None, typer.Option(help="Frame range START:END of each video.")] = None,
    name: Annotated[list[str] | None, typer.Option(help="Session name (repeat per video).")] = None,
    device: DeviceOpt = "auto",
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    coder: Annotated[
        str | None, typer.Option(help="constriction or torchac (new archives).")
    ] = None,
    finetune: Annotated[int, typer.Option(help="Quantization-aware fine-tune epochs.")] = 0,
    qat: Annotated[
        bool | None,
        typer.Option(
            "--qat/--no-qat",
            help="Train through the quantized weights once the mask is fixed (preset default).",
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Add one session per video to ARCHIVE (created if missing)."""
    from .api import EncodeOptions, encode_video

    names = list(name or [])
    if names and len(names) != len(videos):
        raise typer.BadParameter(f"got {len(names)} --name for {len(videos)} videos")
    reports = []
    bars = _Bars(quiet=json_out and not err.is_terminal)
    with bars.progress:
        for i, video in enumerate(videos):
            options = EncodeOptions(
                preset=preset,
                quality=quality,
                capacity=capacity,
                growth=growth,
                bits=bits,
                epochs=epochs,
                minutes=minutes,
                frames=_range(frames),
                name=names[i] if names else None,
                device=device,
                seed=seed,
                coder=coder,
                qat_epochs=finetune,
                quantize_aware=qat,
            )
            bars.start(f"{video.name}")
            reports.append(encode_video(archive, video, options, bars.update))
    if json_out:
        print(json.dumps({"archive": str(archive), "sessions": [r.to_dict() for r in reports]}))
    else:
        out.print(_session_table(f"added to {archive}", reports, with_time=True))


@app.command()
def decode(
    session: Annotated[int, typer.Option("--session", "-s", help="Session number (1-based).")],
    archive: ArchiveOpt = Path("archive.pfnr"),
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="PNG folder, .y4m, .mkv (FFV1) or .mp4.")
    ] = None,
    size: Annotated[str, typer.Option(help="original or working.")] = "original",
    frames: Annotated[str | None, typer.Option(help="Frame range START:END.")] = None,
    reference: Annotated[Path | None, typer.Option(help="Source video for PSNR / MS-SSIM.")] = None,
    exact: Annotated[
        bool, typer.Option(help="Render in float64 (the same bytes on any CPU or GPU).")
    ] = False,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
) -> None:
    """Rebuild a session's frames and write them without adding loss."""
    from .api import decode_session
    from .video import write_video

    result = decode_session(
        archive,
        session,
        frames=_range(frames),
        size=size,
        exact=exact,
        device=device,
        reference=reference,
    )
    target = output or Path(f"{archive.stem}_session{session}.mkv")
    written = write_video(result.frames, target, result.fps)
    record = result.to_dict() | {"output": str(written)}
    if json_out:
        print(json.dumps(record))
        return
    table = _table(f"session {session} of {archive} -> {written}")
    for column in ("frames", "size", "BPP", "bytes", "decode fps", "as encoded"):
        table.add_column(column, justify="right")
    table.add_column("PSNR", justify="right")
    table.add_column("MS-SSIM", justify="right")
    shape = result.frames.shape
    table.add_row(
        str(shape[0]),
        f"{shape[2]}x{shape[1]}",
        _fmt(result.bpp, 4),
        f"{result.bytes:,}",
        _fmt(result.frames_per_second, 1),
        _fmt(result.matches_encode),
        _fmt(result.psnr),
        _fmt(result.ms_ssim, 4),
    )
    out.print(table)
    if result.matches_encode is False and not exact:
        err.print(
            "[yellow]note:[/] float32 rendering differs by a few pixel levels between devices and "
            "instruction sets; --exact renders the bytes the encoder fingerprinted on any CPU or GPU"
        )


@app.command()
def info(
    archive: Annotated[Path, typer.Argument(help="Archive file.")] = Path("archive.pfnr"),
    json_out: JsonOpt = False,
) -> None:
    """Show what an archive holds."""
    from .api import inspect_archive

    report = inspect_archive(archive)
    if json_out:
        print(json.dumps(report.to_dict()))
        return
    h, w = report.working_size
    out.print(
        f"[bold]{report.path}[/]: pfnr format {report.format_version} (written by pfnr "
        f"{report.tool_version}), preset {report.preset}, {report.model_weights:,} shared weights, "
        f"working size {w}x{h}, coder {report.coder}"
    )
    out.print(_session_table("sessions", report.sessions, with_time=False))
    grown = [s for s in report.sessions if s.added_channels]
    if grown:
        added = sum(s.added_channels for s in grown)
        out.print(
            f"growth: {len(grown)} sessions added {added:,} channels of their own "
            f"(sessions {', '.join(str(s.session) for s in grown)})"
        )
    parts = _table("bytes")
    for column in ("part", "bytes", "share"):
        parts.add_column(column, justify="right")
    for part, size in report.breakdown.items():
        parts.add_row(part, f"{size:,}", f"{size / max(1, report.file_bytes):.1%}")
    parts.add_row("file", f"{report.file_bytes:,}", f"archive BPP {report.bpp:.4f}")
    out.print(parts)
    free = _table("free in the base network (a full one grows)")
    free.add_column("layer")
    free.add_column("free", justify="right")
    for layer, share in report.free_share.items():
        free.add_row(layer, f"{share:.0%}")
    out.print(free)


@app.command()
def demo(
    folder: Annotated[Path, typer.Option(help="Where the demo archive and frames go.")] = Path(
        "demo-out"
    ),
    minutes: Annotated[float, typer.Option(help="Training minutes per clip.")] = 1.0,
    json_out: JsonOpt = False,
) -> None:
    """Encode two bundled clips as sessions 1 and 2, and show session 1 did not change."""
    from .demo import run_demo

    bars = _Bars(quiet=json_out and not err.is_terminal)
    with bars.progress:
        result = run_demo(folder, minutes, bars.start, bars.update)
    if json_out:
        print(json.dumps(result))
    else:
        out.print(f"archive: {result['archive']}")
        for line in result["lines"]:
            out.print(line)
    if not result["identical"]:
        err.print("[red]error:[/] session 1 changed when session 2 was added")
        sys.exit(1)


@app.callback(invoke_without_command=True)
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version.")] = False,
) -> None:
    DEBUG["on"] = DEBUG["on"] or debug
    if version:
        print(f"pfnr {__version__}")
        raise typer.Exit()


def main() -> None:
    """Entry point: run the app, turn failures into one line on stderr and an exit code."""
    started = time.monotonic()
    try:
        code = app(standalone_mode=False)
        if code == INTERRUPTED:  # typer turns Ctrl-C into this code
            raise KeyboardInterrupt
        if isinstance(code, int) and code:
            sys.exit(code)
    except PfnrError as exc:
        if DEBUG["on"]:
            raise
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print(
            f"interrupted after {time.monotonic() - started:.0f} s; archives left as they were"
        )
        sys.exit(INTERRUPTED)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(1)
    except Exception as exc:  # click's usage errors (they can show themselves), or a bug
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        if DEBUG["on"]:
            raise
        err.print(f"[red]error:[/] unexpected {type(exc).__name__}: {exc} (run with --debug)")
        sys.exit(1)
