"""Writes the golden archive of the current format version and the fingerprints its decodes must keep.

Run once per format version (python tests/golden/make_golden.py); the files it writes are committed and
decoded by tests/test_golden.py forever after.
"""

from __future__ import annotations

import base64
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from pfnr_codec import arm  # noqa: E402
from pfnr_codec.api import EncodeOptions, decode_session, encode_video, fingerprint  # noqa: E402
from pfnr_codec.container import FORMAT_VERSION, read_archive  # noqa: E402
from pfnr_codec.entropy import encode_latents, get_coder  # noqa: E402
from pfnr_codec.video import write_video  # noqa: E402

from synthetic import grid_with_context, synthetic_frames, textured_frames  # noqa: E402


def main() -> None:
    version = ".".join(map(str, FORMAT_VERSION))
    archive = HERE / f"v{version}.pfnr"
    archive.unlink(missing_ok=True)
    expected = {}
    with tempfile.TemporaryDirectory() as tmp:
        # Session 1 pans a pixel a frame: its latent cells follow the camera (1.5). Session 2
        # holds two scenes (4 + 5 frames, unrelated): its latent grids follow them (1.3).
        clips = [
            textured_frames(6, 30, 44, seed=101),
            np.concatenate([synthetic_frames(n, 26, 38, seed=s) for n, s in ((4, 102), (5, 103))]),
        ]
        for session, frames in enumerate(clips, start=1):
            clip = Path(tmp) / f"golden{session}.mkv"
            write_video(frames, clip, fps=25)
            encode_video(archive, clip, EncodeOptions(preset="tiny", epochs=4, device="cpu"))
        sessions = read_archive(archive).sessions
        assert sessions[1].meta.get("scenes") == [0, 4], "no scenes"
        assert "motion/x" in sessions[0].streams, "no motion"
        for session in (1, 2):
            frames = decode_session(
                archive, session, size="working", exact=True, device="cpu"
            ).frames
            expected[str(session)] = fingerprint(frames)
    (HERE / f"v{version}.json").write_text(json.dumps({"sha256_exact": expected}, indent=2) + "\n")
    write_latents_golden(HERE / f"v{version}_latents.json")
    write_grid_golden(HERE / f"v{version}_grid.json")


def write_latents_golden(path: Path) -> None:
    """Latents streams in every mode of the format (the tiny archive's sessions are too short to
    choose the context-coded one), with the values they hold."""
    coder = get_coder("constriction")
    rng = np.random.default_rng(5)
    start = np.rint(rng.laplace(0, 3, 300))
    walk = np.concatenate([start[None], start + np.cumsum(rng.integers(-1, 2, (11, 300)), 0)])
    noise = np.rint(rng.laplace(0, 3, (12, 300)))
    # Maps alike from one position to the next, 15 x 20 (1.4: coded by their neighbours).
    maps = np.cumsum(np.cumsum(rng.integers(-1, 2, (12, 15, 20)), 1), 2).reshape(12, 300) // 4
    streams = []
    for values, width in ((walk, None), (noise, None), (maps, 20)):
        values = values.astype(np.int64)
        data = encode_latents(values, coder, width)
        entry = {"stream": base64.b64encode(data).decode(), "values": values.tolist()}
        streams.append(entry | ({"width": width} if width else {}))
    modes = {base64.b64decode(s["stream"])[0] for s in streams}
    assert modes == {0, 1, 2}, f"a mode is missing: {modes}"
    path.write_text(json.dumps({"coder": coder.name, "streams": streams}) + "\n")


def write_grid_golden(path: Path) -> None:
    """(1.6) Grids whose channels 1.. are coded by their context model (mode 3) and channel 0 by a
    latents stream, with the values they hold: one model in each coding order."""
    coder = get_coder("constriction")
    rng = np.random.default_rng(6)
    entries = []
    for shape in ((6, 3, 32, 40), (90, 3, 4, 6)):  # spatial, temporal
        values = grid_with_context(rng, shape)
        model = arm.fit(values)
        streams = {"grid/arm": model.to_bytes(coder)}
        streams["grid/0"] = encode_latents(values[:, 0].reshape(shape[0], -1), coder, None)
        for c in range(1, shape[1]):
            payload = arm.encode_channel(model, values, c)
            streams[f"grid/{c}"] = bytes([arm.LATENT_ARM_MODE]) + payload
        encoded = {name: base64.b64encode(data).decode() for name, data in streams.items()}
        entries.append({"order": model.order, "streams": encoded, "values": values.tolist()})
    assert [e["order"] for e in entries] == [arm.SPATIAL, arm.TEMPORAL]
    path.write_text(json.dumps({"coder": coder.name, "grids": entries}) + "\n")


if __name__ == "__main__":
    main()
