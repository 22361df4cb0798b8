"""The shared network and its masked layers."""

from .masked import MaskedWeight, mask_size, top_k_mask
from .network import PFNR, Head, positional_encoding

__all__ = ["PFNR", "Head", "MaskedWeight", "mask_size", "positional_encoding", "top_k_mask"]
