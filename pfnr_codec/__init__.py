"""pfnr: many videos in one progressive Fourier neural representation.

import pfnr_codec
report = pfnr_codec.encode("talk.mp4", "videos.pfnr", minutes=5)   # or a uint8 (T, H, W, 3) array
frames = pfnr_codec.decode("videos.pfnr", session=1).frames        # uint8 (T, H, W, 3)
print(pfnr_codec.info("videos.pfnr").bpp)
"""

from __future__ import annotations

from typing import Any

__version__ = "0.5.0"
__all__ = ["__version__", "decode", "encode", "info"]


def __getattr__(name: str) -> Any:
    """encode / decode / info load torch on first use: `import pfnr_codec` alone stays quick."""
    if name in ("encode", "decode", "info"):
        from . import simple

        return getattr(simple, name)
    raise AttributeError(f"module 'pfnr_codec' has no attribute {name!r}")
