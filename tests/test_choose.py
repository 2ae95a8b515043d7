"""Choosing a backend (runtime/backends/choose.py) over a registry of small stand-in backends: the real
selection code, the real self-check and the real canary judgement, with backends that compute a
nearest-neighbour x4 (what a working model is to the canary here), a wrong one, or cannot be made."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.canary import canary_input, read_canary, write_canary
from core.errors import BackendError
from core.vocabulary import BACKENDS
from runtime.backends import choose
from runtime.backends.base import Backend
from runtime.backends.choose import choose_backend, self_check
from runtime.backends.registry import Entry
from runtime.model.source import Model


def nearest_x4(batch: np.ndarray) -> np.ndarray:
    return batch.repeat(4, axis=2).repeat(4, axis=3)


class Stub(Backend):
    """A backend that logs what is done to it and computes `compute(batch)`."""

    def __init__(self, label: str, log: list[tuple[str, str]], compute=nearest_x4, precision: str = "fp32", fail=None) -> None:
        super().__init__()
        self.name, self.label, self.log, self.compute, self._precision, self.fail = label, label, log, compute, precision, fail

    @property
    def precision(self) -> str:
        return self._precision

    def activate_impl(self) -> None:
        self.log.append(("activate", self.label))
        if self.fail is not None:
            raise self.fail

    def infer_impl(self, batch: np.ndarray) -> np.ndarray:
        return self.compute(batch)

    def deactivate_impl(self) -> None:
        self.log.append(("deactivate", self.label))


def cannot_make(reason: str):
    def make(_model, _precision):
        raise BackendError(reason)

    return make


@pytest.fixture
def log() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def registry(monkeypatch, log):
    """Install entries (name, label, make or a Stub's keywords[, runs on a GPU]) as the registry
    `choose_backend` walks."""

    def install(*entries: tuple) -> None:
        def factory(label: str, spec: object):
            if callable(spec):
                return spec

            def make(_model, _precision):
                log.append(("make", label))
                return Stub(label, log, **spec)

            return make

        made = tuple(Entry(name, label, f"{label} is why", "nothing", factory(label, spec), *gpu) for name, label, spec, *gpu in entries)
        monkeypatch.setattr(choose, "REGISTRY", made)

    return install


@pytest.fixture
def model(tmp_path) -> Model:
    """A model whose exported canary reference is exactly the nearest-neighbour x4 of the canary input."""
    inputs = canary_input()
    write_canary(tmp_path / "canary.npz", inputs, nearest_x4(inputs))
    return Model("stub export", canary=tmp_path / "canary.npz")


def off_by(delta: float):
    return lambda batch: nearest_x4(batch) + np.float32(delta)


def test_auto_takes_the_first_backend_that_loads_and_passes_and_says_why_others_did_not(registry, model, log) -> None:
    registry(
        ("tensorrt-rtx", "tensorrt-rtx", cannot_make("no NVIDIA GPU found")),
        ("openvino", "openvino", {"compute": off_by(0.01)}),
        ("onnxruntime", "onnxruntime", {}),
        ("torch", "torch", {}),
    )
    choice = choose_backend("auto", model)
    assert choice.backend.name == "onnxruntime" and choice.backend.active and choice.reason == "onnxruntime is why"
    assert choice.skipped == [
        "tensorrt-rtx: no NVIDIA GPU found",
        "openvino: self-check failed: differs from the exported FP32 reference by 0.01 (allowed 0.0001)",
    ]
    # The one that failed its self-check was released again; the one after the choice was never made.
    assert log == [("make", "openvino"), ("activate", "openvino"), ("deactivate", "openvino"), ("make", "onnxruntime"), ("activate", "onnxruntime")]


def test_nothing_runs_says_why_for_each(registry, model) -> None:
    registry(("tensorrt", "tensorrt", cannot_make("no tensorrt engine")), ("openvino", "openvino", {"compute": off_by(0.5)}))
    with pytest.raises(BackendError, match=r"^no backend can run here: tensorrt: no tensorrt engine; openvino: self-check failed: "):
        choose_backend("auto", model)


def test_a_named_backend_is_tried_under_each_of_its_entries_and_only_those(registry, model, log) -> None:
    registry(
        ("openvino", "openvino", {}),
        ("onnxruntime", "onnxruntime-cuda", cannot_make("no CUDA provider")),
        ("onnxruntime", "onnxruntime", {}),
    )
    choice = choose_backend("onnxruntime", model)
    assert choice.backend.label == "onnxruntime" and choice.reason == "chosen with --backend"
    assert choice.skipped == ["onnxruntime-cuda: no CUDA provider"] and ("make", "openvino") not in log


def test_a_named_backend_that_cannot_run_is_an_error_with_every_reason(registry, model) -> None:
    registry(
        ("openvino", "openvino", {}),
        ("onnxruntime", "onnxruntime-cuda", cannot_make("no CUDA provider")),
        ("onnxruntime", "onnxruntime", {"compute": off_by(0.01)}),
    )
    with pytest.raises(BackendError, match=r"^backend onnxruntime cannot run: no CUDA provider; self-check failed: differs"):
        choose_backend("onnxruntime", model)


def test_an_unknown_name_lists_the_choices(registry, model) -> None:
    registry(("openvino", "openvino", {}))
    with pytest.raises(BackendError, match=f"unknown backend 'fastest' \\(choose from {', '.join(BACKENDS)}\\)"):
        choose_backend("fastest", model)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ({"fail": MemoryError()}, "openvino: MemoryError"),  # a load that ran out of memory: auto moves on
        ({"fail": BackendError("cannot compile")}, "openvino: cannot compile"),
        ({"compute": lambda batch: (_ for _ in ()).throw(ValueError("bad shape\nstack"))}, "openvino: self-check failed: bad shape"),
        ({"compute": lambda batch: batch.repeat(2, axis=2).repeat(2, axis=3)}, "not an x4 RGB model"),
        ({"compute": lambda batch: np.full_like(nearest_x4(batch), np.nan)}, "NaN/Inf values"),
    ],
    ids=["out-of-memory", "backend-error", "infer-raises", "x2", "nan"],
)
def test_every_way_of_failing_moves_auto_on_in_one_line(registry, model, spec, reason) -> None:
    registry(("openvino", "openvino", spec), ("onnxruntime", "onnxruntime", {}))
    choice = choose_backend("auto", model)
    assert choice.backend.name == "onnxruntime"
    assert len(choice.skipped) == 1 and reason in choice.skipped[0] and "\n" not in choice.skipped[0]


def test_precision_sets_the_bound_a_backend_is_held_to(registry, model) -> None:
    def one_pixel_off(batch: np.ndarray) -> np.ndarray:
        out = nearest_x4(batch)
        out[0, 1, 7, 9] -= np.float32(1.5 / 255)  # within FP16's 2/255, far outside FP32's 1e-4
        return out

    registry(("openvino", "openvino", {"compute": one_pixel_off, "precision": "fp16"}), ("torch", "torch", {}))
    assert choose_backend("auto", model).backend.name == "openvino"
    registry(("openvino", "openvino", {"compute": one_pixel_off, "precision": "fp32"}), ("torch", "torch", {}))
    choice = choose_backend("auto", model)
    assert choice.backend.name == "torch" and "differs from the exported FP32 reference by 0.0059" in choice.skipped[0]


def test_without_a_reference_a_plausible_x4_is_enough(registry, log) -> None:
    bare = Model("--onnx x.onnx")  # no canary: only what any x4 model must do is checked
    registry(("openvino", "openvino", {"compute": lambda batch: np.full_like(nearest_x4(batch), 0.5)}), ("onnxruntime", "onnxruntime", {}))
    choice = choose_backend("auto", bare)
    assert choice.backend.name == "onnxruntime" and "not a working x4 model" in choice.skipped[0]


def test_a_canary_that_is_not_one_refuses_every_backend(registry, tmp_path) -> None:
    (tmp_path / "canary.npz").write_bytes(b"not an npz")
    registry(("openvino", "openvino", {}), ("torch", "torch", {}))
    with pytest.raises(BackendError, match="no backend can run here: openvino: .*not a canary file.*; torch: .*not a canary file"):
        choose_backend("auto", Model("damaged", canary=tmp_path / "canary.npz"))


def test_the_canary_is_read_from_disk_once_however_many_backends_are_checked(registry, model, log, monkeypatch) -> None:
    """`auto` may self-check several backends, and the FP32 fallback later: one read of the file for all
    (replaces a wall-clock bound on the check; bench/selfcheck.py measures its cost)."""
    reads: list[Path] = []
    monkeypatch.setattr(choose, "read_canary", lambda path: reads.append(path) or read_canary(path))
    registry(*[(name, name, {"compute": off_by(0.01)}) for name in ("tensorrt-rtx", "tensorrt", "openvino")], ("torch", "torch", {}))
    choice = choose_backend("auto", model)
    assert choice.backend.name == "torch" and len(choice.skipped) == 3
    fallback = Stub("fallback", log)
    fallback.activate()
    self_check(fallback, model)  # what Upscaler does for the FP32 fallback on the first NaN tile
    assert reads == [model.canary]


def test_an_fp16_choice_brings_an_unloaded_fp32_fallback_when_there_is_an_fp32_graph(registry, model, tmp_path) -> None:
    registry(("openvino", "openvino", {"precision": "fp16"}))
    model.onnx = {"fp32": tmp_path / "fp32.onnx", "fp16": tmp_path / "fp16.onnx"}
    fallback = choose_backend("auto", model).fallback
    assert fallback is not None and fallback.precision == "fp32" and not fallback.active
    assert fallback.onnx_path == tmp_path / "fp32.onnx"
    model.onnx = {"fp16": tmp_path / "fp16.onnx"}  # nothing to fall back on
    assert choose_backend("auto", model).fallback is None
    registry(("openvino", "openvino", {"precision": "fp32"}))  # an FP32 backend needs none
    model.onnx = {"fp32": tmp_path / "fp32.onnx"}
    assert choose_backend("auto", model).fallback is None


def test_fp16_asked_of_auto_is_for_gpus_cpu_backends_run_their_own_precision(registry, model, log) -> None:
    asked: dict[str, str | None] = {}

    def make(label: str, here: bool):
        def factory(_model, precision):
            asked[label] = precision
            if not here:
                raise BackendError("no NVIDIA GPU found")
            return Stub(label, log, precision=precision or "fp32")

        return factory

    registry(("tensorrt-rtx", "tensorrt-rtx", make("tensorrt-rtx", False), True), ("openvino", "openvino", make("openvino", True)))
    choice = choose_backend("auto", model, "fp16")
    assert asked == {"tensorrt-rtx": "fp16", "openvino": None} and choice.backend.precision == "fp32"
    assert choice.reason == "openvino is why; --fp16 needs a GPU backend, so it runs fp32 (FP16 is slower on CPUs)"
    choose_backend("openvino", model, "fp16")  # named, a CPU backend is held to what was asked
    assert asked["openvino"] == "fp16"


def test_a_canary_exported_again_in_place_is_read_again(tmp_path) -> None:
    """The canary is cached per file version: a re-export into the same folder in one process is judged
    against its new reference, not the old one."""
    inputs = canary_input()
    path = tmp_path / "canary.npz"
    write_canary(path, inputs, np.zeros((1, 3, inputs.shape[2] * 4, inputs.shape[3] * 4), np.float32))
    with Stub("nearest", []) as backend:
        with pytest.raises(BackendError, match="self-check failed"):
            self_check(backend, Model("test", canary=path))
        write_canary(path, inputs, nearest_x4(inputs))
        self_check(backend, Model("test", canary=path))
