"""Every backend described once, in `auto` order: its --backend name, the label it is reported under, why
`auto` would choose it, what it needs, and how to make it for a model and a precision. A factory raises
BackendError with the reason when the backend cannot be made here; nothing is loaded until `activate()`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.artifacts import MODULES
from core.errors import BackendError
from core.extras import missing
from core.nvidia import cuda_device
from runtime.backends.base import Backend
from runtime.model.source import Model, onnx_path


def _trt(flavor: str, model: Model, precision: str | None) -> Backend:
    module = MODULES[flavor]
    engine = model.engines.get(flavor)
    if engine is None:
        raise BackendError(f"no {module} engine in {model.origin} (export one with export.py)")
    if cuda_device() is None:
        raise BackendError("no NVIDIA GPU found")
    from runtime.backends.tensorrt import TensorRTBackend

    backend = TensorRTBackend(engine)
    if precision is not None and backend.precision != precision:
        raise BackendError(f"the engine is {backend.precision}, {precision} was asked for")
    return backend


def _ort(model: Model, precision: str | None, device: str) -> Backend:
    from runtime.backends.onnxruntime import ORTBackend, cuda_provider_available

    if device == "cuda" and not cuda_provider_available():
        raise BackendError("ONNX Runtime's CUDA provider is not available (needs onnxruntime-gpu and a GPU)")
    precision = precision or ("fp16" if device == "cuda" and "fp16" in model.onnx else "fp32")
    return ORTBackend(onnx_path(model, precision), precision, device)


def _openvino(model: Model, precision: str | None) -> Backend:
    if precision == "fp16":
        raise BackendError("runs fp32, or bf16 (--bf16) on CPUs with bfloat16 arithmetic; FP16 brings no speed on CPUs")
    if missing(("openvino",)):
        raise BackendError("openvino is not installed (pip install openvino)")
    from runtime.backends.openvino import OpenVINOBackend

    return OpenVINOBackend(onnx_path(model, "fp32"), precision or "fp32")


def _torch(model: Model, precision: str | None, device: str) -> Backend:
    if device == "cuda" and cuda_device() is None:  # asked of the driver: torch is not imported for nothing
        raise BackendError("no NVIDIA GPU found")
    if model.ckpt is None:
        raise BackendError(f"needs a checkpoint, and {model.origin} has none (pass --ckpt)")
    if precision not in (None, "fp32") and not (device == "cuda" and precision == "fp16"):
        raise BackendError(f"PyTorch runs fp32{', or fp16 on CUDA' if device == 'cuda' else ' on the CPU'}, not {precision}")
    if missing(("torch",)):
        raise BackendError("torch is not installed (the [export] extra: pip install -e '.[export]')")
    from runtime.backends.pytorch import TorchBackend

    # On a GPU FP16 by default, as ONNX Runtime CUDA: what a GPU is for; the canary holds it to the FP16 bounds.
    default = "fp16" if device == "cuda" else "fp32"
    return TorchBackend(model.ckpt, model.key, device=device, precision=precision or default)


Factory = Callable[[Model, "str | None"], Backend]


@dataclass(frozen=True)
class Entry:
    """One backend as `auto` sees it: `name` for --backend, `label` in reports, `why` auto would choose it,
    `needs` what a machine must have, `make` the factory (BackendError when it cannot be made here), `gpu`
    whether it runs on a GPU."""

    name: str
    label: str
    why: str
    needs: str
    make: Factory
    gpu: bool = False


REGISTRY: tuple[Entry, ...] = (
    Entry("tensorrt-rtx", "tensorrt-rtx", "TensorRT-RTX engine on an RTX GPU: the fastest path",
          "a TensorRT-RTX engine, an RTX GPU (SM75-SM121, not SM90/SM100), the [gpu] extra",
          lambda model, precision: _trt("rtx", model, precision), gpu=True),
    Entry("tensorrt", "tensorrt", "standard TensorRT engine on an NVIDIA GPU",
          "a standard TensorRT engine built for this GPU and TensorRT version, the [tensorrt] extra",
          lambda model, precision: _trt("tensorrt", model, precision), gpu=True),
    Entry("onnxruntime", "onnxruntime-cuda", "ONNX Runtime on the GPU",
          "onnxruntime-gpu instead of onnxruntime, an NVIDIA GPU", lambda model, precision: _ort(model, precision, "cuda"),
          gpu=True),
    Entry("torch", "torch-cuda", "PyTorch on the GPU: the GPU path where no engine runs (e.g. SM90)",
          "a checkpoint, torch with CUDA, an NVIDIA GPU", lambda model, precision: _torch(model, precision, "cuda"), gpu=True),
    Entry("openvino", "openvino", "no GPU backend available; OpenVINO is the fastest CPU backend measured",
          "nothing more (a base dependency)", _openvino),
    Entry("onnxruntime", "onnxruntime", "ONNX Runtime on the CPU", "nothing more (a base dependency)",
          lambda model, precision: _ort(model, precision, "cpu")),
    Entry("torch", "torch", "PyTorch reference", "a checkpoint, and torch", lambda model, precision: _torch(model, precision, "cpu")),
)  # fmt: skip
