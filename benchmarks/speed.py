"""Speed: encode time per session and per epoch, decode frames/s, entropy coding, peak memory.

    python -m benchmarks.speed --quick
    python -m benchmarks.speed [clip.mp4] [--device cuda]

Decode speed is shown beside PyAV's H.264 decode of the same frames at the same size (x264 medium,
CRF 23, decoded to RGB), measured in the same run. Every timing is preceded by a warm-up and
synchronizes the device at both ends; the best of a few repeats is reported, since the 2-core
machine is shared and slower repeats measure the neighbours.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks import anchors
from benchmarks.common import (
    DEFAULT_CLIPS_DIR,
    RESULTS_DIR,
    Clip,
    Timer,
    device_name,
    load_clip,
    machine_info,
    markdown_table,
    write_markdown,
)
from pfnr_codec.api import EncodeOptions, decode_session, encode_video
from pfnr_codec.archive import load_archive
from pfnr_codec.render import resolve_device, session_weights


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` timed calls after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        with Timer() as timer:
            fn()
        times.append(timer.seconds)
    return min(times)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_encode(
    clips: Sequence[Clip], archive: Path, options: EncodeOptions
) -> list[list[object]]:
    """Encode each clip as the next session: (session, clip, s, epochs, s/epoch, PSNR, peak MB)."""
    rows = []
    for number, clip in enumerate(clips, start=1):
        stamps: list[float] = []
        with Timer() as timer:
            report = encode_video(
                archive,
                clip.path,
                replace(options, frames=(0, clip.shape[0])),
                progress=lambda p, stamps=stamps: stamps.append(time.perf_counter()),
            )
        per_epoch = float(np.median(np.diff(stamps))) if len(stamps) > 2 else float("nan")
        rows.append(
            [number, clip.name, timer.seconds, report.epochs, per_epoch, report.psnr, peak_rss_mb()]
        )
    return rows


def measure_decode(archive: Path, session: int, device: str, repeats: int) -> dict[str, float]:
    """Frames/s of the network forward at batch 1 and 8, and of the api's full decode call."""
    dev = resolve_device(device)
    loaded = load_archive(archive, dev, upto=session)
    model, head = loaded.session_model(session), loaded.heads[session - 1]
    weights = session_weights(model, loaded.masks[session - 1])
    frames = int(loaded.session(session).meta["frames"])
    out: dict[str, float] = {}
    for batch in (1, 8):
        indices = torch.arange(batch, device=dev)

        def forward(indices: torch.Tensor = indices) -> None:
            with torch.no_grad():
                model(indices, head, weights)

        out[f"batch {batch}"] = batch / best_of(forward, repeats)
    seconds = best_of(lambda: decode_session(archive, session, size="working", device=device), 2)
    out["api decode (load + render + uint8)"] = frames / seconds
    return out


def measure_h264(clip: Clip, repeats: int) -> tuple[float, int]:
    """PyAV H.264 decode to RGB of the same frames at the same size: (frames/s, stream bytes)."""
    anchor = anchors.make_anchor("x264", "medium")
    even, _ = anchors.pad_even(clip.frames)
    stream, _ = anchors.encode(even, anchor, 23, clip.fps)
    _, h, w = clip.shape
    seconds = best_of(lambda: anchors.decode(stream, anchor, h, w), repeats)
    return clip.shape[0] / seconds, len(stream)


def measure_entropy(coders: Sequence[str], n: int, repeats: int) -> list[list[object]]:
    """Throughput of the archive's integer and mask streams, in million symbols per second."""
    from pfnr_codec import entropy

    rng = np.random.default_rng(0)
    codes = np.clip(np.round(rng.laplace(0, 12, n)), -127, 127).astype(np.int32)
    mask = rng.random(n) < 0.3
    rows = []
    for name in coders:
        coder = entropy.get_coder(name)
        for kind, data, enc, dec in (
            ("8-bit codes", codes, entropy.encode_ints, entropy.decode_ints),
            ("mask bits p=0.3", mask, entropy.encode_bits, entropy.decode_bits),
        ):
            stream = enc(data, coder)
            decoded = dec(stream, n, coder)
            if not np.array_equal(decoded, data):
                raise RuntimeError(f"{name} {kind}: round trip is not exact")
            t_enc = best_of(lambda d=data, f=enc, c=coder: f(d, c), repeats)
            t_dec = best_of(lambda s=stream, f=dec, c=coder: f(s, n, c), repeats)
            rows.append([name, kind, n, len(stream) * 8 / n, n / t_enc / 1e6, n / t_dec / 1e6])
    return rows


def measure_mask_overhead(
    preset: str, size: tuple[int, int], device: str, repeats: int, capacity: float = 0.3
) -> dict[str, float]:
    """Seconds per training step with session masks vs the same network without them.

    Both steps run forward, loss and backward on the same batch; the masked one adds the top-k
    masks, the straight-through estimator and the frozen/free merge. Alternated, best of repeats.
    """
    from pfnr_codec.config import get_preset
    from pfnr_codec.loss import reconstruction_loss
    from pfnr_codec.model import PFNR
    from pfnr_codec.train import TrainSettings, begin_session, dense_weights

    target = resolve_device(device)
    model = PFNR(get_preset(preset).model_config(*size)).to(target)
    batch = get_preset(preset).train["batch_size"]
    frames = torch.rand(batch, 3, model.config.height, model.config.width, device=target)
    settings = TrainSettings(capacity=capacity)
    head = begin_session(model, settings, session_seed=1, frames=frames)
    indices = torch.arange(batch, device=target)

    def step(masked: bool) -> None:
        out = model(indices, head, None if masked else dense_weights(model))
        reconstruction_loss(out, frames).backward()
        model.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)

    masked, dense = [], []
    for _ in range(repeats):
        masked.append(best_of(lambda: step(True), 2))
        dense.append(best_of(lambda: step(False), 2))
    return {"masked_s": min(masked), "dense_s": min(dense), "ratio": min(masked) / min(dense)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("clips", nargs="*", type=Path, help="two videos (default: shared clips)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--frames", type=int, default=None, help="first N frames of each clip")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per session")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--torchac", action="store_true", help="also time torchac (compiles)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    args = parser.parse_args(argv)

    quick = args.quick
    stem = "speed_quick" if quick else "speed"
    paths = args.clips or [DEFAULT_CLIPS_DIR / "bigbuckbunny.mp4", DEFAULT_CLIPS_DIR / "bikes.mp4"]
    frames = args.frames or (16 if quick else 64)
    epochs = args.epochs or (4 if quick else 20)
    repeats = 3 if quick else 5
    from pfnr_codec.config import working_size
    from pfnr_codec.video import probe_video

    info = probe_video(paths[0])
    size = working_size(args.preset, info.height, info.width)
    clips = [load_clip(p, (0, frames), size) for p in paths]
    machine = machine_info(args.device)
    work = args.out / "tmp" / stem
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    archive = work / "speed.pfnr"
    options = EncodeOptions(preset=args.preset, epochs=epochs, device=args.device, seed=0)

    # Warm-up: the first encode in a process pays for imports, allocator growth and kernel choice.
    warm = replace(options, epochs=1, frames=(0, 2))
    encode_video(work / "warmup.pfnr", clips[0].path, warm)
    encode_rows = measure_encode(clips, archive, options)
    decode = measure_decode(archive, 1, args.device, repeats)
    overhead = measure_mask_overhead(args.preset, size, args.device, repeats)
    h264_fps, h264_bytes = measure_h264(clips[0], repeats)
    coders = ["constriction", "torchac"] if args.torchac else ["constriction"]
    entropy_rows = measure_entropy(coders, 200_000 if quick else 2_000_000, repeats)
    peak = peak_rss_mb()
    cuda_peak = (
        torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda") else None
    )
    t, h, w = clips[0].shape
    macs = load_archive(archive, torch.device("cpu"), upto=1).session_model(1).config.macs_per_pixel
    sections = [
        f"Device: {device_name(args.device)}; torch threads {torch.get_num_threads()}; "
        f"{frames} frames per clip at the working size {w}x{h} (preset {args.preset}), "
        f"{epochs} epochs per session; timings are the best of {repeats} after a warm-up.",
        "## Encode",
        markdown_table(
            encode_rows,
            ["session", "clip", "seconds", "epochs", "s/epoch", "PSNR", "peak RSS MB"],
        ),
        "## Mask machinery (one training step, same network with and without session masks)",
        markdown_table(
            [
                [
                    f"{overhead['masked_s']:.4f}",
                    f"{overhead['dense_s']:.4f}",
                    f"{overhead['ratio']:.3f}",
                ]
            ],
            ["masked s/step", "unmasked s/step", "ratio"],
        ),
        "## Decode (session 1)",
        f"Decoding costs {macs:,.0f} multiply-accumulates per output pixel (convolutions, linear "
        "layers, FSO mixing and head; FFTs and activations not counted).",
        markdown_table(
            [[f"pfnr {k}", v] for k, v in decode.items()]
            + [[f"PyAV H.264 decode to RGB ({h264_bytes} B stream)", h264_fps]],
            ["decoder", "frames/s"],
        ),
        markdown_table(
            [[k, f"{v / h264_fps:.3f}"] for k, v in decode.items()],
            ["pfnr decode", "frames/s relative to PyAV H.264"],
        ),
        "## Entropy coding",
        markdown_table(
            entropy_rows, ["coder", "stream", "symbols", "bits/symbol", "enc Msym/s", "dec Msym/s"]
        ),
        f"Peak memory: {peak:.0f} MB RSS (whole process)"
        + (f"; CUDA {cuda_peak:.0f} MB allocated" if cuda_peak is not None else ""),
    ]
    (args.out / f"{stem}.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "encode": encode_rows,
                "decode_fps": decode,
                "decode_macs_per_pixel": macs,
                "mask_overhead": overhead,
                "h264_decode_fps": h264_fps,
                "entropy": entropy_rows,
                "peak_rss_mb": peak,
                "cuda_peak_mb": cuda_peak,
            },
            indent=1,
        )
        + "\n"
    )
    path = write_markdown(args.out / f"{stem}.md", f"pfnr speed ({stem})", machine, sections)
    shutil.rmtree(work, ignore_errors=True)
    print(path.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
