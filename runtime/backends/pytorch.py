"""PyTorch on a checkpoint: the reference path kept for parity tests (CPU, FP32), and a GPU backend where
the engines cannot run (CUDA, FP32 or FP16: data-centre GPUs such as the H100, which TensorRT-RTX does not
support). Imports torch lazily.

On CUDA it follows PyTorch's performance guidance for convolutional networks: channels-last memory
format, `torch.inference_mode()`, FP16 weights and inputs for FP16. FP32 means FP32: TF32 (on by default
for cuDNN convolutions on Ampere and newer) is switched off, since it moves the canary by about 4e-3
against its 1e-4 FP32 bound (tensorrt-notes); that switch is process-wide, as PyTorch's flags are.

8-bit tiles cross to the device as bytes and come back as bytes: core/boundary.py's conversion, written in
torch operations, runs on the device (the same float32 operations in the same order as on the host).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from core.boundary import nonfinite
from core.errors import first_line
from runtime.backends.base import Backend, BackendError, BackendOutOfMemory, Limits


class TorchBackend(Backend):
    name = "torch"

    def __init__(
        self, ckpt: Path, key: str | None = None, device: str = "auto", threads: int | None = None, precision: str = "fp32"
    ) -> None:
        super().__init__()
        if precision not in ("fp32", "fp16"):
            raise BackendError(f"torch: runs fp32 or fp16 (on CUDA), not {precision}")
        self.ckpt = Path(ckpt)
        self.key = key
        self.device = device
        self.threads = threads
        self._precision = precision
        self._model = None
        self._torch = None

    @property
    def precision(self) -> str:
        return self._precision

    @property
    def converts_pixels(self) -> bool:
        return True

    @property
    def limits(self) -> Limits:
        return Limits(fixed_shape=self.device == "cuda")  # cuDNN picks its algorithms per input shape

    def describe(self) -> str:
        return f"{self.name} {self.device.upper()} ({self._precision})"

    def activate_impl(self) -> None:
        import torch

        from export.checkpoint import load_checkpoint
        from export.fuse import fuse

        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise BackendError("torch: CUDA is not available in this PyTorch build or machine")
        if self._precision == "fp16" and self.device != "cuda":
            raise BackendError("torch: fp16 runs on CUDA only (it is slower than fp32 on CPUs)")
        if self.threads:
            torch.set_num_threads(self.threads)
        self._torch = torch
        model = fuse(load_checkpoint(self.ckpt, self.key)).eval().to(self.device)
        if self.device == "cuda":
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
            model = model.to(memory_format=torch.channels_last)
            if self._precision == "fp16":
                model = model.half()
        self._model = model

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode(), self._out_of_memory():
            return self._forward(torch.from_numpy(batch).to(self.device)).cpu().numpy()

    def pixels_impl(self, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if tiles.dtype != np.uint8:
            return super().pixels_impl(tiles)
        torch = self._torch
        with torch.inference_mode(), self._out_of_memory():
            x = torch.from_numpy(tiles).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
            y = self._forward(x)
            checksums = y.sum(dim=(1, 2, 3))
            pixels = y.mul_(255.0).clamp_(0.0, 255.0).round_().to(torch.uint8).permute(0, 2, 3, 1)
            return pixels.contiguous().cpu().numpy(), nonfinite(checksums.cpu().numpy())

    def _forward(self, x):  # torch.Tensor -> torch.Tensor, float32 N x 3 x 4H x 4W
        if self.device != "cuda":
            return self._model(x.contiguous()).float()
        x = x.contiguous(memory_format=self._torch.channels_last)
        return self._model(x.half() if self._precision == "fp16" else x).float()

    @contextlib.contextmanager
    def _out_of_memory(self) -> Iterator[None]:
        try:
            yield
        except self._torch.OutOfMemoryError as exc:
            raise BackendOutOfMemory(first_line(exc)) from None

    def deactivate_impl(self) -> None:
        self._model = None
        if self._torch is not None and self.device == "cuda":
            self._torch.cuda.empty_cache()
