"""What the engine builder and the runtime's TensorRT backend share, with TensorRT imported only when asked:
the process's one TensorRT logger, and the targets TensorRT-RTX can build for."""

from __future__ import annotations

import functools
import importlib
from types import ModuleType

from core.artifacts import MODULES


def rtx_targets() -> list[str]:
    """The compute capabilities TensorRT-RTX can target, from its own ComputeCapability enum (e.g. SM75 ...
    SM121; no SM90/SM100: data-centre GPUs need standard TensorRT); empty where tensorrt_rtx is not installed."""
    try:
        trt = importlib.import_module(MODULES["rtx"])
    except ImportError:
        return []
    members = trt.ComputeCapability.__members__
    return sorted((name for name in members if name.startswith("SM")), key=lambda name: int(members[name]))



@functools.cache
def process_logger(trt: ModuleType):
    """The one logger of this process for this TensorRT module (TensorRT wants the same logger for every
    builder and runtime). It keeps the latest warnings and errors: some reasons only ever reach the logger."""

    class Capture(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: list[str] = []

        def log(self, severity, msg) -> None:
            if severity <= trt.ILogger.Severity.WARNING:
                self.messages = [*self.messages[-9:], str(msg)]

        def reason(self) -> str:
            """The last messages, for an error; they are then forgotten."""
            text, self.messages = "; ".join(self.messages[-3:]), []
            return text

    return Capture()
