"""PyTorch (CPU or CUDA) on a checkpoint: the reference path kept for parity tests. Imports torch lazily."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import first_line
from runtime.backends.base import Backend, BackendError, BackendOutOfMemory


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, ckpt: Path, key: str | None = None, device: str = "auto", threads: int | None = None) -> None:
        super().__init__()
        self.ckpt = Path(ckpt)
        self.key = key
        self.device = device
        self.threads = threads
        self._model = None
        self._torch = None

    def describe(self) -> str:
        return f"{self.name} {self.device.upper()} (fp32)"

    def activate_impl(self) -> None:
        import torch

        from export.checkpoint import load_checkpoint
        from export.fuse import fuse

        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise BackendError("torch: CUDA is not available in this PyTorch build or machine")
        if self.threads:
            torch.set_num_threads(self.threads)
        self._torch = torch
        self._model = fuse(load_checkpoint(self.ckpt, self.key)).eval().to(self.device)

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        try:
            with torch.inference_mode():
                return self._model(torch.from_numpy(batch).to(self.device)).float().cpu().numpy()
        except torch.OutOfMemoryError as exc:
            raise BackendOutOfMemory(first_line(exc)) from None

    def deactivate_impl(self) -> None:
        self._model = None
