"""Benchmarks for pfnr: RD curves against classical anchors, continual learning, speed.

Run each as a module from the repository root, e.g. ``python -m benchmarks.rd --quick``.
"""
