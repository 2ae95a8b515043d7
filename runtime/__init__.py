"""LSANet x4 runtime. `from runtime import Upscaler` is the library entry point (runtime/upscaler.py); it is
imported on first use, so importing one submodule (the tiler, image I/O) stays light."""

from __future__ import annotations

__all__ = ["Upscaler"]


def __getattr__(name: str) -> object:
    if name == "Upscaler":
        from runtime.upscaler import Upscaler

        return Upscaler
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")
