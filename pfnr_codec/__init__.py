"""pfnr: many videos in one progressive Fourier neural representation."""

__version__ = "0.1.0"
