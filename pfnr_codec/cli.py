"""The `pfnr` command: encode, decode, info, demo.

Thin on purpose: each command parses options, calls `api`, and prints. Results go to stdout (a rich
table, or exactly one JSON object with --json); progress, warnings and errors go to stderr. Errors are
mapped to exit codes in one place (`main`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table

from . import __version__, interrupt
from .coders import CODERS
from .config import PRECISIONS, PRESETS
from .errors import DistributedError, InputError, PfnrError, UsageError

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help="pfnr: many videos in one progressive Fourier neural representation.",
)
INTERRUPTED = 130
STDIO = Path("-")  # `encode -` reads the video from stdin, `decode -o -` writes y4m to stdout
DEBUG = {"on": bool(os.environ.get("PFNR_DEBUG"))}


def _console(stderr: bool) -> Console:
    """A terminal gets its own width; piped output takes $COLUMNS, else 160 columns, so tables
    stay whole for whoever reads the file."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    columns = os.environ.get("COLUMNS", "")
    return Console(stderr=stderr, width=int(columns) if columns.isdigit() else 160)


out, err = _console(stderr=False), _console(stderr=True)


# Choices come from the registries themselves, so --help lists exactly what exists.
PresetChoice = StrEnum("PresetChoice", {name: name for name in PRESETS})
CoderChoice = StrEnum("CoderChoice", {name: name for name in CODERS})
PrecisionChoice = StrEnum("PrecisionChoice", {name: name for name in PRECISIONS})


class SizeChoice(StrEnum):
    original = "original"
    working = "working"


class PixFmtChoice(StrEnum):
    yuv420p = "yuv420p"
    yuv444p = "yuv444p"


ArchiveOpt = Annotated[Path, typer.Option("--archive", "-a", help="Archive file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress bars or notes on stderr.")
]


def _value(choice: Enum | None) -> str | None:
    return None if choice is None else choice.value


def _range(text: str | None) -> tuple[int, int | None] | None:
    """A frame range option; bad syntax is a usage error (exit 2), like any other bad option."""
    from .video import parse_frame_range

    if text is None:
        return None
    try:
        return parse_frame_range(text)
    except InputError as exc:
        raise UsageError(f"--frames: {exc}") from None


_SIZE_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmg]?)b?\s*", re.IGNORECASE)


def _size(text: str | None) -> int | None:
    """A size option in bytes: 150000, 150k, 1.5M, 2MB (powers of 1000, as file sizes are sold);
    bad syntax is a usage error (exit 2)."""
    if text is None:
        return None
    match = _SIZE.fullmatch(text)
    if match is None:
        raise UsageError(
            f"--target-size: expected bytes such as 150000, 150k or 1.5M, got {text!r}"
        )
    size = round(float(match[1]) * _SIZE_UNITS[match[2].lower()])
    if size < 1:
        raise UsageError(f"--target-size must be at least one byte, got {text!r}")
    return size


@contextmanager
def _stdin_video() -> Iterator[Path]:
    """The video piped to stdin, spooled to a temporary file named `stdin` (FFmpeg needs to
    seek; the session's source then reads `stdin`)."""
    if sys.stdin.isatty():
        raise UsageError("'-' reads the video from stdin, but stdin is a terminal: pipe a video in")
    with tempfile.TemporaryDirectory(prefix="pfnr-stdin-") as folder:
        path = Path(folder) / "stdin"
        with open(path, "wb") as spool:
            shutil.copyfileobj(sys.stdin.buffer, spool, 1 << 20)
        if path.stat().st_size == 0:
            raise InputError("stdin held no data: pipe a video in")
        yield path


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(title: str) -> Table:
    """Compact tables: they must stay readable in an 80-column terminal."""
    return Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")


# The full sessions table needs about this many columns; narrower terminals get the columns that
# matter most, so no number is ever cut.
FULL_TABLE_WIDTH = 112


def _session_parts_table(sessions: list[Any]) -> Table:
    """What each session paid for, by part: what it stores of its own against the network."""
    from .api import shown_parts

    table = _table("bytes by session (weights with their scales; other: metadata)")
    for column in ("session", "weights", "latents", "masks", "heads", "other", "total"):
        table.add_column(column, justify="right")
    for s in sessions:
        row = (*shown_parts(s.parts).values(), s.bytes)
        table.add_row(str(s.session), *(f"{n:,}" for n in row))
    return table


def _session_table(title: str, sessions: list[Any], with_time: bool) -> Table:
    table = _table(title)
    full = out.width >= FULL_TABLE_WIDTH
    columns = ["#", "name"] + (["source", "fps"] if full else []) + ["frames", "PSNR"]
    columns += (["MS-SSIM"] if full else []) + ["BPP"] + (["new w."] if full else [])
    columns += ["reused", "bytes"] + (["time s"] if with_time else [])
    for column in columns:
        if column in ("name", "source"):
            table.add_column(column, overflow="fold", min_width=6)
        else:
            table.add_column(column, justify="right", no_wrap=True)
    for s in sessions:
        cells = {
            "#": str(s.session),
            "name": s.name,
            "source": s.source,
            "fps": _fmt(s.fps),
            "frames": str(s.frames),
            "PSNR": _fmt(s.psnr),
            "MS-SSIM": _fmt(s.ms_ssim, 4),
            "BPP": _fmt(s.bpp, 4),
            "new w.": f"{s.new_weights:,}",
            "reused": f"{s.reused_share:.0%}",
            "bytes": f"{s.bytes:,}",
            "time s": _fmt(getattr(s, "encode_seconds", None), 1),
        }
        table.add_row(*(cells[c] for c in columns))
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
        """A new bar: it pulses while the video is read and the model set up, then fills."""
        self.label = label
        self.task = self.progress.add_task(label, total=None, psnr="setting up", epochs="")

    def update(self, p: Any) -> None:
        if self.task is None:
            self.start(self.label)
        # Measured on the float weights during training; the final table's PSNR is the decoded one.
        label = "train PSNR" if p.phase == "train" else "fine-tune PSNR"
        note = f"{label} {p.psnr:6.2f} dB  lr {p.learning_rate:.1e}"
        if p.estimated_bytes is not None:
            note += f"  ~{p.estimated_bytes / 1000:,.0f} kB"
        if p.recoveries:
            note += f"  recovered x{p.recoveries}"
        if p.epoch >= p.epochs:
            note += "  rendering and coding..."
        self.progress.update(
            self.task,
            completed=p.epoch,
            total=p.epochs,
            psnr=note,
            epochs=f"epoch {p.epoch}/{p.epochs}",
        )

    def discard(self) -> None:
        """Drop the current bar (a refused input leaves no bar behind its error line)."""
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None


def _stop_on_sigterm(main_rank: bool) -> None:
    """torchrun stops every process when one fails: rank 0 says so in one line, the others quietly
    exit (the archive is written only at the end, so it stays as it was)."""

    def stop(signum: int, frame: Any) -> None:  # noqa: ARG001
        if not main_rank:
            sys.exit(1)
        raise DistributedError(
            "torchrun stopped the encode (another training process failed or the run was "
            "cancelled); archives left as they were"
        )

    signal.signal(signal.SIGTERM, stop)


@app.command()
def encode(
    videos: Annotated[
        list[Path], typer.Argument(help="Videos (or folders of frames), in order; - is stdin.")
    ],
    archive: ArchiveOpt = Path("archive.pfnr"),
    preset: Annotated[
        PresetChoice | None, typer.Option(help="Model family of a new archive (default cpu).")
    ] = None,
    quality: Annotated[
        int | None,
        typer.Option(
            "--quality",
            min=1,
            max=7,
            help="1..7 (default 4): each level up spends more bits; per session in cpu/tiny "
            "(the rate term), new archives only in frame-time presets (widths).",
        ),
    ] = None,
    target_size: Annotated[
        str | None,
        typer.Option(
            help="Aim each session at this many bytes (150k, 1.5M) instead of a --quality; "
            "the note after each session says where it landed.",
        ),
    ] = None,
    target_bpp: Annotated[
        float | None,
        typer.Option(help="Aim each session at these bits per pixel (at the working size)."),
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
    batch_size: Annotated[
        int | None, typer.Option(min=1, help="Frames per training step of each process.")
    ] = None,
    name: Annotated[list[str] | None, typer.Option(help="Session name (repeat per video).")] = None,
    device: DeviceOpt = "auto",
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    coder: Annotated[
        CoderChoice | None, typer.Option(help="Entropy coder of a new archive.")
    ] = None,
    finetune: Annotated[int, typer.Option(help="Quantization-aware fine-tune epochs.")] = 0,
    qat: Annotated[
        bool | None,
        typer.Option(
            "--qat/--no-qat",
            help="Train through the quantized weights once the mask is fixed (preset default).",
        ),
    ] = None,
    precision: Annotated[
        PrecisionChoice,
        typer.Option(
            help="Training's float type; auto: bfloat16 where the CPU or GPU computes it "
            "natively. Decoding is float32 whatever trained the session.",
        ),
    ] = PrecisionChoice.auto,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Add one session per video to ARCHIVE (created if missing). Under torchrun every process
    trains each session together; rank 0 writes the archive and alone shows progress and results."""
    from . import distributed
    from .api import EncodeOptions, encode_video

    names = list(name or [])
    if names and len(names) != len(videos):
        raise typer.BadParameter(f"got {len(names)} --name for {len(videos)} videos")
    if videos.count(STDIO) > 1:
        raise UsageError("stdin ('-') can be read only once")
    world = distributed.world_from_env()
    if world.active:
        if STDIO in videos:
            raise UsageError("under torchrun every process reads the video: give a file, not '-'")
        _stop_on_sigterm(world.is_main)
    target_bytes = _size(target_size)
    existed = archive.exists()
    reports = []
    quiet = quiet or not world.is_main
    bars = _Bars(quiet=quiet or (json_out and not err.is_terminal))
    with bars.progress:
        for i, video in enumerate(videos):
            options = EncodeOptions(
                preset=_value(preset),
                quality=quality,
                target_bytes=target_bytes,
                target_bpp=target_bpp,
                capacity=capacity,
                growth=growth,
                bits=bits,
                epochs=epochs,
                minutes=minutes,
                batch_size=batch_size,
                frames=_range(frames),
                name=names[i] if names else None,
                device=device,
                seed=seed,
                coder=_value(coder),
                qat_epochs=finetune,
                quantize_aware=qat,
                precision=precision.value,
            )
            bars.start(video.name if video != STDIO else "stdin")
            try:
                if video == STDIO:
                    with _stdin_video() as spooled:
                        reports.append(encode_video(archive, spooled, options, bars.update))
                else:
                    reports.append(encode_video(archive, video, options, bars.update))
            except BaseException:
                bars.discard()
                raise
            for note in [] if quiet else reports[-1].notes:
                err.print(f"[yellow]note:[/] {video.name}: {note}", highlight=False)
    distributed.leave()
    if not world.is_main:
        return
    if json_out:
        print(json.dumps({"archive": str(archive), "sessions": [r.to_dict() for r in reports]}))
    else:
        how = "appended to" if existed else "new archive"
        out.print(_session_table(f"{how} {archive}", reports, with_time=True))


@app.command()
def decode(
    session: Annotated[int, typer.Option("--session", "-s", help="Session number (1-based).")],
    archive: ArchiveOpt = Path("archive.pfnr"),
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="PNG folder, .y4m, .mkv (FFV1), .mp4, or - (y4m to stdout)."
        ),
    ] = None,
    size: Annotated[SizeChoice, typer.Option(help="Size to decode at.")] = SizeChoice.original,
    frames: Annotated[str | None, typer.Option(help="Frame range START:END.")] = None,
    reference: Annotated[Path | None, typer.Option(help="Source video for PSNR / MS-SSIM.")] = None,
    exact: Annotated[
        bool, typer.Option(help="Render in float64 (the same bytes on any CPU or GPU).")
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite/--no-overwrite", "-y/-n", help="Replace an existing output."),
    ] = False,
    crf: Annotated[int, typer.Option(min=0, max=51, help="H.264 quality of an .mp4 output.")] = 18,
    pix_fmt: Annotated[
        PixFmtChoice, typer.Option(help="Chroma of an .mp4 output (yuv420p plays everywhere).")
    ] = PixFmtChoice.yuv420p,
    device: DeviceOpt = "auto",
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Rebuild a session's frames and write them without adding loss."""
    from .api import decode_session
    from .video import output_exists, padded_for, write_video, write_y4m_stream

    target = output or Path(f"{archive.stem}_session{session}.mkv")
    to_stdout = target == STDIO
    if not to_stdout and not overwrite and output_exists(target):
        raise UsageError(f"{target} exists; add -y to overwrite it")
    report = err if to_stdout else out  # with frames on stdout, nothing else goes there
    result = decode_session(
        archive,
        session,
        frames=_range(frames),
        size=size.value,
        exact=exact,
        device=device,
        reference=reference,
    )
    if to_stdout:
        write_y4m_stream(result.frames, sys.stdout.buffer, result.fps)
        sys.stdout.buffer.flush()
        written = "stdout"
    else:
        written = str(
            write_video(result.frames, target, result.fps, crf=crf, pix_fmt=pix_fmt.value)
        )
    record = result.to_dict() | {"output": written}
    if json_out:
        print(json.dumps(record), file=sys.stderr if to_stdout else sys.stdout)
        return
    table = _table(f"session {session} of {archive} -> {written}")
    for column in ("frames", "size", "BPP", "bytes", "fps", "as encoded", "PSNR", "MS-SSIM"):
        table.add_column(column, justify="right", no_wrap=True)
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
    report.print(table)
    if not quiet:
        report.print("fps: decoded frames per second; PSNR, MS-SSIM: against --reference")
    for warning in result.warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    height, width = result.frames.shape[1:3]
    is_mp4 = Path(written).suffix.lower() in (".mp4", ".mov")
    if is_mp4 and padded_for(pix_fmt.value, height, width) != (height, width) and not quiet:
        err.print(
            f"[yellow]note:[/] {width}x{height} is odd; {pix_fmt.value} needs even sizes, so the "
            "last row or column is repeated (--pix-fmt yuv444p keeps the size)"
        )
    if result.matches_encode is False and not exact and not quiet:
        err.print(
            "[yellow]note:[/] float32 rendering differs by a few pixel levels between devices and "
            "instruction sets; --exact renders the bytes the encoder fingerprinted on any CPU or GPU"
        )


@app.command()
def info(
    archive: Annotated[Path | None, typer.Argument(help="Archive file.")] = None,
    archive_option: Annotated[
        Path | None, typer.Option("--archive", "-a", help="Archive file (like the others).")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Show what an archive holds."""
    from .api import inspect_archive

    if archive is not None and archive_option is not None and archive != archive_option:
        raise UsageError("give the archive once: as an argument or with -a")
    report = inspect_archive(archive or archive_option or Path("archive.pfnr"))
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
        which = ", ".join(str(s.session) for s in grown)
        sessions = (
            f"1 session added ({which})"
            if len(grown) == 1
            else (f"{len(grown)} sessions added ({which})")
        )
        out.print(f"growth: {sessions} {added:,} channels of their own")
    out.print(_session_parts_table(report.sessions))
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
    quiet: QuietOpt = False,
) -> None:
    """Encode two bundled clips as sessions 1 and 2, and show session 1 did not change."""
    from .demo import run_demo

    bars = _Bars(quiet=quiet or (json_out and not err.is_terminal))
    with bars.progress:
        result = run_demo(folder, minutes, bars.start, bars.update)
    if json_out:
        print(json.dumps(result))
    else:
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
    interrupt.install()
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
