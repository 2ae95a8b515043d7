"""Backends: one small interface (base.py), one module per backend, the registry that describes each once,
and choosing with a self-check (choose.py)."""
