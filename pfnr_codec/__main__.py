"""`python -m pfnr_codec` runs the pfnr command."""

from .cli import main

main()
