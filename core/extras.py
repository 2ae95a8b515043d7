"""Which optional parts are installed, asked without importing them (an import of torch alone takes
seconds): the exporter's packages, a backend's package."""

from __future__ import annotations

import importlib.util

# What the [export] extra brings that export.py and the runtime's checkpoint paths import.
EXPORTER = ("torch", "onnx", "onnxscript")


def missing(modules: tuple[str, ...]) -> list[str]:
    """The ones of `modules` that are not installed."""
    return [name for name in modules if importlib.util.find_spec(name) is None]
