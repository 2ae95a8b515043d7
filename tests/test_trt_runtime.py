"""The TensorRT backend at run time.

Without a GPU: the checks made before deserializing, and the backend's contract with TensorRT-RTX and
cuda-python, run against the fake pair of tests/trt_api/fake.py (whose every call is checked against the
real, introspected API) on a real TensorRT-RTX engine and sidecar built by export.py: every failure is a
one-line BackendError from activate(), which frees what it had allocated. Execution and its parity (PyTorch
vs ONNX vs engine, FP16 thresholds) need an NVIDIA GPU and skip without one.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from skimage import data

from core.boundary import from_model, to_model
from core.metrics import compare
from core.nvidia import CudaDevice, cuda_device
from core.thresholds import THRESHOLDS as RUNTIME_THRESHOLDS
from export.parity import THRESHOLDS, to_nchw
from export.trt_build import PROFILES as LANES
from export.trt_build import Profile
from runtime.backends import tensorrt as trt_backend
from runtime.backends.base import BackendError
from runtime.backends.choose import self_check
from runtime.backends.tensorrt import TensorRTBackend, check_compatibility
from runtime.model.source import Model
from runtime.model.source import engine_sidecar as read_sidecar
from runtime.tiling import upscale
from runtime.upscaler import tile_config
from tests.trt_api.fake import Scenario, install, nearest_x4

RTX_4090 = CudaDevice("NVIDIA GeForce RTX 4090", "8.9", "12.4", 24564)
H100 = CudaDevice("NVIDIA H100 80GB HBM3", "9.0", "12.4", 81559)
A100 = CudaDevice("NVIDIA A100-SXM4-80GB", "8.0", "12.4", 81920)


@pytest.fixture
def engine(exported, tmp_path: Path) -> Path:
    for name in ("lsanet_x4_fp16.rtx.engine", "lsanet_x4_fp16.rtx.json"):
        shutil.copy(exported[0] / name, tmp_path / name)
    return tmp_path / "lsanet_x4_fp16.rtx.engine"


@pytest.fixture
def fake_gpu(monkeypatch, tmp_path: Path, engine: Path):
    """Install the fake TensorRT-RTX / cuda-python pair on an RTX 4090; returns a function that starts a
    scenario (the profile is the real engine's) and gives the backend and the scenario."""
    monkeypatch.setenv("LSANET_CACHE", str(tmp_path / "cache"))
    profile = next(iter(read_sidecar(engine)["profile"].values()))

    def start(device: CudaDevice = RTX_4090, **settings) -> tuple[TensorRTBackend, Scenario]:
        scenario = Scenario(profile=tuple(tuple(profile[k]) for k in ("min", "opt", "max")), **settings)
        install(monkeypatch, scenario)
        monkeypatch.setattr(trt_backend, "cuda_device", lambda: device)
        return TensorRTBackend(engine), scenario

    return start


ALLOCATE, FREE = ("cudaMalloc", "cudaMallocHost"), ("cudaFree", "cudaFreeHost")
STREAM_USES = ("cudaMemcpyAsync", "execute_async_v3", "cudaStreamSynchronize")


def assert_released_safely(events: list[str]) -> None:
    """What a release must get right, whatever else the backend does and in whatever order: every buffer and
    stream made is freed once; nothing is freed while work may still be queued on the stream (no memory or
    stream before its last use); and each TensorRT object goes before the one it was made from (TensorRT's
    rule: context, then engine, then runtime; the runtime cache saved before it is let go)."""
    assert sum(e in ALLOCATE for e in events) == sum(e in FREE for e in events), events
    assert events.count("cudaStreamCreate") == events.count("cudaStreamDestroy"), events
    last_use = max((i for i, e in enumerate(events) if e in STREAM_USES), default=-1)
    assert all(i > last_use for i, e in enumerate(events) if e in FREE or e == "cudaStreamDestroy"), events
    created = events.index("cudaStreamCreate") if "cudaStreamCreate" in events else len(events)
    assert all(i > created for i, e in enumerate(events) if e in STREAM_USES), events

    def before(first: str, then: str) -> None:
        if first in events and then in events:
            assert events.index(first) < events.index(then), (first, then, events)

    before("del IExecutionContext", "del ICudaEngine")
    before("del ICudaEngine", "del Runtime")
    before("del IRuntimeConfig", "del ICudaEngine")
    before("serialize IRuntimeCache", "del IRuntimeCache")


def test_runs_tiles_through_the_engine_and_releases_everything_safely(fake_gpu, capsys) -> None:
    backend, scenario = fake_gpu()
    with backend:
        for shape in ((1, 3, 16, 16), (1, 3, 37, 512), (1, 3, 512, 512)):
            x = np.random.default_rng(0).random(shape, dtype=np.float32)
            np.testing.assert_array_equal(backend.infer(x), nearest_x4(x))
        assert "compiling for this GPU (first run only)..." in capsys.readouterr().err
        assert scenario.events.count("execute_async_v3") == 3 and scenario.streams  # ran on a live stream
    # TensorRT-RTX's CUDA graphs, asked for on the runtime config, which the context samples when made.
    graphs = scenario.events.index("set IRuntimeConfig.cuda_graph_strategy WHOLE_GRAPH_CAPTURE")
    assert graphs < scenario.events.index("create IExecutionContext")
    # A buffer of each kind per I/O tensor and lane (their sizes: test_buffers_are_sized_from_the_profile_max).
    assert sorted(e for e in scenario.events if e in ALLOCATE) == ["cudaMalloc"] * 4 * LANES + ["cudaMallocHost"] * 4 * LANES
    assert scenario.events.count("create IExecutionContext") == scenario.events.count("cudaStreamDestroy") == LANES
    assert_released_safely(scenario.events)
    assert not scenario.allocations and not scenario.streams
    assert {"del IExecutionContext", "del ICudaEngine", "del Runtime", "del IRuntimeCache"} <= set(scenario.events)
    assert backend.runtime_cache_path.read_bytes() == b"fake runtime cache"
    with backend:  # the second run finds its runtime cache: no JIT message
        pass
    assert "compiling" not in capsys.readouterr().err


def test_the_release_check_catches_what_it_is_for() -> None:
    """The property above fails on the mistakes it exists for (so a pass means something)."""
    good = ["cudaStreamCreate", "cudaMallocHost", "cudaMalloc", "cudaMemcpyAsync", "execute_async_v3",
            "cudaStreamSynchronize", "del IExecutionContext", "del ICudaEngine", "del Runtime", "cudaFree",
            "cudaFreeHost", "cudaStreamDestroy"]  # fmt: skip
    assert_released_safely(good)
    leak = [e for e in good if e != "cudaFreeHost"]
    freed_early = ["cudaStreamCreate", "cudaMalloc", "cudaFree", "cudaMemcpyAsync", "cudaStreamDestroy"]
    stream_destroyed_early = ["cudaStreamCreate", "cudaStreamDestroy", "cudaStreamSynchronize"]
    engine_first = ["del ICudaEngine", "del IExecutionContext"]
    for bad in (leak, freed_early, stream_destroyed_early, engine_first):
        with pytest.raises(AssertionError):
            assert_released_safely(bad)


def test_buffers_are_sized_from_the_profile_max(fake_gpu) -> None:
    backend, scenario = fake_gpu()
    with backend:
        sizes = sorted(len(buffer) for buffer in scenario.allocations.values())
    _, _, h, w = scenario.profile[2]
    # Per lane at 512x512: 4 bytes of sr_sum, 3 MiB in, 12 MiB of output bytes, 48 MiB of float output.
    pair = 2 * LANES  # pinned and device
    assert sizes == [4] * pair + [3 * h * w * 4] * pair + [3 * h * w * 16] * pair + [3 * h * w * 16 * 4] * pair


@pytest.mark.parametrize(
    ("settings", "message", "made"),
    [
        ({"context_none": True}, "no execution context", ["del IRuntimeCache", "del IRuntimeConfig", "del ICudaEngine"]),
        ({"set_input_shape": False}, "rejects its own largest input shape", ["del IExecutionContext", "del ICudaEngine"]),
        ({"out_of_memory_at": 3}, r"out of GPU memory for 48 MiB of device memory for sr", ["cudaFree", "cudaFreeHost"]),
        ({"output_dtype": "HALF"}, r"expected FP32 input lr and output sr \(and uint8 sr_pixels, FP32 sr_sum\), found lr INPUT "
         "FLOAT, sr OUTPUT HALF, sr_pixels OUTPUT UINT8, sr_sum OUTPUT FLOAT", ["del ICudaEngine"]),
        ({"deserialize_none": True}, r"cannot deserialize \(Error Code 1: Serialization \(fake reason\)\)", ["del Runtime"]),
        ({"validity": "INVALID", "diagnostics": ("OLD_CUDA_DRIVER", "INSUFFICIENT_GPU_MEMORY")},
         r"cannot run it here \(OLD_CUDA_DRIVER, INSUFFICIENT_GPU_MEMORY\); update the NVIDIA driver; free GPU memory",
         ["del Runtime"]),
        ({"runtime_type_error": True}, r"cannot start on this driver \(CUDA 12.4\): update the NVIDIA driver", []),
    ],
)  # fmt: skip
def test_every_failure_is_a_one_line_backend_error_and_frees_everything(fake_gpu, settings, message, made) -> None:
    backend, scenario = fake_gpu(**settings)
    with pytest.raises(BackendError, match=message) as error:
        backend.activate()
    assert "\n" not in str(error.value) and not backend.active
    assert not scenario.allocations and not scenario.streams, "activate() must free what it allocated before failing"
    assert_released_safely(scenario.events)
    assert set(made) <= set(scenario.events), (made, scenario.events)  # what was made was let go


def test_8bit_tiles_come_back_from_the_engine_as_bytes(fake_gpu) -> None:
    """The engine's pixel outputs: the float input is written by the host (core/boundary.py's to_model), only
    the bytes and the checksums are copied back, and they are what the host boundary makes of the float
    output; 16-bit tiles take the float output and the host boundary."""
    backend, scenario = fake_gpu()
    tiles = np.random.default_rng(1).integers(0, 256, (1, 37, 64, 3), dtype=np.uint8)
    with backend:
        assert backend.converts_pixels
        scenario.copies.clear()
        pixels, broken = backend.infer_pixels(tiles)
        back = [count for kind, count in scenario.copies if kind == "cudaMemcpyDeviceToHost"]
        assert back == [tiles.size * 16, 4]  # bytes and one checksum; the float output (4x the bytes) stays
        assert broken.tolist() == [False]
        want, _ = from_model(nearest_x4(to_model(tiles)), np.uint8)
        np.testing.assert_array_equal(pixels, want)
        deep = tiles.astype(np.uint16) * 257
        scenario.copies.clear()
        sixteen, _ = backend.infer_pixels(deep)
        assert [c for k, c in scenario.copies if k == "cudaMemcpyDeviceToHost"] == [deep.size * 16 * 4]
        np.testing.assert_array_equal(sixteen, from_model(nearest_x4(to_model(deep)), np.uint16)[0])


def test_nan_in_the_engines_output_is_flagged_on_the_8bit_path(fake_gpu, monkeypatch) -> None:
    backend, scenario = fake_gpu()
    tiles = np.full((1, 16, 16, 3), 7, np.uint8)
    with backend:
        # The input conversion puts a NaN in the float input; the fake network carries it to its output.
        monkeypatch.setattr(trt_backend, "to_model", lambda t, out: out.fill(np.nan))
        pixels, broken = backend.infer_pixels(tiles)
    assert broken.tolist() == [True]


def test_an_engine_without_pixel_outputs_runs_8bit_tiles_through_the_host(fake_gpu) -> None:
    """An engine of an earlier export (FP32 lr / sr only) still runs, with the conversion on the host."""
    backend, scenario = fake_gpu(pixel_outputs=False)
    tiles = np.random.default_rng(2).integers(0, 256, (1, 20, 24, 3), dtype=np.uint8)
    with backend:
        assert not backend.converts_pixels
        pixels, _ = backend.infer_pixels(tiles)
    np.testing.assert_array_equal(pixels, from_model(nearest_x4(to_model(tiles)), np.uint8)[0])
    assert sorted(e for e in scenario.events if e in ALLOCATE) == ["cudaMalloc"] * 2 * LANES + ["cudaMallocHost"] * 2 * LANES
    assert_released_safely(scenario.events)


def test_the_self_check_holds_the_engines_8bit_path_to_its_float_path(fake_gpu) -> None:
    """Without a stored reference the fake network (nearest x4) passes plausibility, so what decides is the
    comparison of the engine's pixel outputs with its float output: swapped channels are refused."""
    model = Model("fake", canary=None)
    backend, _ = fake_gpu()
    with backend:
        self_check(backend, model)
    backend, _ = fake_gpu(swapped_pixels=True)
    with backend, pytest.raises(BackendError, match="8-bit path is up to .* levels from its float path"):
        self_check(backend, model)


def test_two_calls_run_at_once_each_in_its_own_lane(fake_gpu) -> None:
    """Two threads are inside execute_async_v3 at the same time (the fake waits at a barrier there until both
    are), each on its own stream and optimisation profile (the fake refuses two executions on one profile);
    each gets its own tile back."""
    backend, scenario = fake_gpu()
    tiles = [np.full((1, 24, 24, 3), value, np.uint8) for value in (40, 200)]
    with backend:
        assert backend.limits.concurrent == LANES == 2
        scenario.in_execute = threading.Barrier(2, timeout=10).wait
        with ThreadPoolExecutor(2) as pool:
            results = list(pool.map(backend.infer_pixels, tiles))
        assert len(set(scenario.executed_on)) == 2, scenario.executed_on
    for (pixels, broken), tile in zip(results, tiles):
        assert not broken.any() and (pixels == tile[0, 0, 0]).all()
    assert_released_safely(scenario.events)


def test_a_release_waits_for_running_calls_and_turns_away_waiting_ones(fake_gpu) -> None:
    """deactivate() while both lanes run and a third call waits for one (Upscaler.close() racing a run): the
    waiting call gets a BackendError at once, the running ones finish before anything is freed, and the
    backend activates and runs again afterwards."""
    backend, scenario = fake_gpu()
    tile = np.full((1, 20, 20, 3), 50, np.uint8)
    inside, go = threading.Semaphore(0), threading.Event()
    scenario.in_execute = lambda: (inside.release(), go.wait(10))
    backend.activate()
    with ThreadPoolExecutor(4) as pool:
        running = [pool.submit(backend.infer_pixels, tile) for _ in range(2)]
        assert inside.acquire(timeout=10) and inside.acquire(timeout=10)  # both lanes are executing
        waiting = pool.submit(backend.infer_pixels, tile)
        time.sleep(0.2)
        released = pool.submit(backend.deactivate)
        with pytest.raises(BackendError, match="released while this call waited for a lane"):
            waiting.result(timeout=10)
        assert not released.done()  # still waiting for the running calls
        go.set()
        released.result(timeout=10)
        assert all((r.result(timeout=10)[0] == 50).all() for r in running)
    assert_released_safely(scenario.events)
    assert not scenario.allocations and not scenario.streams
    scenario.in_execute = None
    with backend:
        assert (backend.infer_pixels(tile)[0] == 50).all()


def test_an_engine_with_one_profile_runs_one_lane_and_a_mismatch_is_refused(fake_gpu, engine: Path) -> None:
    """An engine of an earlier export has one profile and a sidecar without `profiles`: one lane, one call at
    a time. A sidecar that promises more profiles than the engine has is refused before any context."""
    backend, scenario = fake_gpu(profiles=1)
    with pytest.raises(BackendError, match="the engine has 1 optimisation profiles, its sidecar says 2; rebuild"):
        backend.activate()
    assert "create IExecutionContext" not in scenario.events
    sidecar = json.loads(engine.with_suffix(".json").read_text())
    del sidecar["profiles"]
    engine.with_suffix(".json").write_text(json.dumps(sidecar))
    backend, scenario = fake_gpu(profiles=1)
    with backend:
        assert backend.limits.concurrent == tile_config(backend.limits).in_flight == 1
        np.testing.assert_array_equal(backend.infer_pixels(np.full((1, 20, 20, 3), 9, np.uint8))[0], 9)
    assert scenario.events.count("create IExecutionContext") == 1
    assert_released_safely(scenario.events)


def test_the_tiler_keeps_two_batches_in_flight_and_stitches_the_same_image(fake_gpu) -> None:
    backend, scenario = fake_gpu()
    image = data.astronaut()[:300, :420]
    with backend:
        config = tile_config(backend.limits, 128)
        assert config.in_flight == LANES
        both = upscale(image, backend.infer_pixels, config)
        one = upscale(image, backend.infer_pixels, replace(config, in_flight=1))
        assert len(set(scenario.executed_on)) == 2
    np.testing.assert_array_equal(both, one)
    np.testing.assert_array_equal(both, image.repeat(4, axis=0).repeat(4, axis=1))  # the fake is nearest x4


def test_a_runtime_shape_the_engine_rejects_is_a_backend_error(fake_gpu) -> None:
    backend, scenario = fake_gpu()
    with backend:
        scenario.set_input_shape = False
        with pytest.raises(BackendError, match="rejects input shape"):
            backend.infer(np.zeros((1, 3, 32, 32), np.float32))


def test_suboptimal_engine_warns_and_runs(fake_gpu) -> None:
    backend, _ = fake_gpu(validity="SUBOPTIMAL", diagnostics=("OLD_CUDA_RUNTIME",))
    with pytest.warns(UserWarning, match=r"runs suboptimally here \(OLD_CUDA_RUNTIME\)"):
        backend.activate()
    backend.deactivate()


@pytest.mark.parametrize("device", [H100, A100], ids=["SM90", "SM80"])
def test_gpus_the_engine_cannot_serve_are_refused_before_loading(fake_gpu, device) -> None:
    backend, scenario = fake_gpu(device)
    with pytest.raises(BackendError) as error:
        backend.activate()
    if device is H100:  # TensorRT-RTX has no SM90 target at all: standard TensorRT is the way
        assert "TensorRT-RTX cannot run on this GPU (SM90" in str(error.value) and "--flavor tensorrt" in str(error.value)
    else:  # SM80 is a TensorRT-RTX target, just not one of the default three
        assert "built for SM86, SM89, SM120, this GPU is SM80" in str(error.value)
        assert "--compute-capability SM80" in str(error.value)
    assert scenario.events == []


@pytest.mark.parametrize(
    ("device", "settings", "reason"),
    [
        (H100, {}, "TensorRT-RTX cannot run on this GPU (SM90"),
        (A100, {}, "this GPU is SM80; rebuild it with"),
        (RTX_4090, {"runtime_type_error": True}, "update the NVIDIA driver"),
    ],
    ids=["SM90", "SM80", "old-driver"],
)
def test_auto_passes_over_an_engine_this_gpu_cannot_run_and_says_why(fake_gpu, monkeypatch, exported, device, settings, reason) -> None:
    from runtime.backends import choose, registry

    backend, _ = fake_gpu(device, **settings)
    monkeypatch.setattr(registry, "cuda_device", lambda: device)
    out = exported[0]
    model = Model("test", onnx={"fp32": out / "lsanet_x4_fp32.onnx", "fp16": out / "lsanet_x4_fp16.onnx"},
                            engines={"rtx": backend.engine_path})  # fmt: skip
    chosen = choose.choose_backend("auto", model)
    try:
        assert chosen.backend.name != "tensorrt-rtx"
        assert any(line.startswith("tensorrt-rtx: ") and reason in line for line in chosen.skipped), chosen.skipped
    finally:
        chosen.backend.deactivate()


@pytest.mark.parametrize("missing", ["tensorrt_rtx", "cuda.bindings.runtime"])
def test_missing_packages_name_the_pip_command(fake_gpu, monkeypatch, missing) -> None:
    backend, _ = fake_gpu()
    monkeypatch.setitem(__import__("sys").modules, missing, None)  # None in sys.modules: ImportError
    with pytest.raises(BackendError, match=r"is not installed \(pip install -e '\.\[gpu\]'"):
        backend.activate()


def test_activation_without_a_gpu_is_a_clear_error(engine: Path) -> None:
    if cuda_device() is not None:
        pytest.skip("a GPU is present: covered by the execution tests below")
    with pytest.raises(BackendError, match="needs an NVIDIA GPU"):
        TensorRTBackend(engine).activate()


def test_sidecar_must_match_the_engine(engine: Path) -> None:
    sidecar = read_sidecar(engine)
    assert sidecar["flavor"] == "rtx"
    engine.write_bytes(engine.read_bytes() + b"\0")
    with pytest.raises(BackendError, match="does not match its sidecar"):
        read_sidecar(engine)
    engine.with_suffix(".json").unlink()
    with pytest.raises(BackendError, match="no sidecar"):
        read_sidecar(engine)


def test_compatibility_messages_say_what_to_do(engine: Path) -> None:
    sidecar = read_sidecar(engine)
    version = sidecar["version"]
    check_compatibility(engine, sidecar, version, "8.9")
    with pytest.raises(BackendError, match=r"built for SM86, SM89, SM120, this GPU is SM75; .*--compute-capability SM75"):
        check_compatibility(engine, sidecar, version, "7.5")
    with pytest.raises(BackendError, match=r"TensorRT-RTX cannot run on this GPU \(SM100; it supports SM75, SM80, "):
        check_compatibility(engine, sidecar, version, "10.0")
    with pytest.raises(BackendError, match=r"built with TensorRT-RTX .*installed 2\.0"):
        check_compatibility(engine, sidecar, "2.0.0", "8.9")
    standard = dict(sidecar, flavor="tensorrt", version="10.13.0", target_compute_capabilities=["SM89"])
    with pytest.raises(BackendError, match="built with TensorRT 10.13.0, installed 10.14.1"):
        check_compatibility(engine, standard, "10.14.1", "8.9")
    with pytest.raises(BackendError, match="this GPU is SM86"):
        check_compatibility(engine, standard, "10.13.0", "8.6")
    check_compatibility(engine, dict(standard, target_compute_capabilities=["AMPERE_PLUS"]), "10.13.0", "8.6")


def test_limits_come_from_the_profile(engine: Path) -> None:
    backend = TensorRTBackend(engine)
    default = Profile()
    assert (backend.limits.min_side, backend.limits.max_side, backend.limits.max_batch) == (16, default.max[1], default.max[0])
    assert backend.precision == "fp16"


def test_engine_json_is_what_the_manifest_lists(exported) -> None:
    manifest = json.loads((exported[0] / "manifest.json").read_text())
    sidecars = [a for a in manifest["artifacts"] if a["kind"] == "sidecar"]
    assert sidecars and all((exported[0] / a["file"]).is_file() for a in sidecars)


PIXEL_LEVELS = RUNTIME_THRESHOLDS.pixel_path_levels
needs_gpu = pytest.mark.skipif(cuda_device() is None, reason="needs an NVIDIA GPU")


def runs_here(engine: Path) -> Path:
    """The engine, or a skip with TensorRT-RTX's own reason on a GPU it cannot serve by design (SM90 and
    SM100 have no TensorRT-RTX target; other GPUs outside the engine's targets need a rebuild for them): the
    session's export is built for the default targets, so there the execution tests have nothing to run."""
    import tensorrt_rtx

    try:
        check_compatibility(engine, read_sidecar(engine), tensorrt_rtx.__version__, cuda_device().compute_capability)
    except BackendError as exc:
        pytest.skip(str(exc))
    return engine


@needs_gpu
def test_engine_matches_pytorch_and_onnx_on_real_images(exported, public_model, set5, photos) -> None:
    import torch

    from runtime.backends.onnxruntime import ORTBackend

    out = exported[0]
    with TensorRTBackend(runs_here(out / "lsanet_x4_fp16.rtx.engine")) as trt, ORTBackend(out / "lsanet_x4_fp32.onnx", device="cpu") as ort:
        for name, lr, _ in set5 + photos:
            x = to_nchw(lr)  # all within the profile's 512x512
            with torch.no_grad():
                reference = np.clip(public_model(torch.from_numpy(x)).numpy(), 0, 1)
            engine_out = trt.infer(x)
            # The export gate's FP16 thresholds (export/parity.py): the engine runs the same FP16 graph.
            for other in (reference, np.clip(ort.infer(x), 0, 1)):
                result = compare(other, np.clip(engine_out, 0, 1))
                assert result.nonfinite == 0, name
                assert result.psnr >= THRESHOLDS.fp16_min_psnr and result.max_abs <= THRESHOLDS.fp16_max_abs, (name, result)


@needs_gpu
def test_engine_runs_profile_extremes_and_keeps_its_runtime_cache(exported, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LSANET_CACHE", str(tmp_path))
    backend = TensorRTBackend(runs_here(exported[0] / "lsanet_x4_fp16.rtx.engine"))
    with backend:
        for shape in ((1, 3, 16, 16), (1, 3, 64, 48), (1, 3, 512, 512)):
            out = backend.infer(np.random.default_rng(0).random(shape, dtype=np.float32))
            assert out.shape == (shape[0], 3, shape[2] * 4, shape[3] * 4) and np.isfinite(out).all()
        # The engine's pixel outputs against its own float output through the host boundary: the same float
        # values, but TensorRT may fuse the scaling into other kernels (THRESHOLDS.pixel_path_levels: 1 level).
        tiles = np.stack([data.astronaut()[100:228, 150:278]])
        pixels, broken = backend.infer_pixels(tiles)
        want, _ = from_model(backend.infer(to_model(tiles)), np.uint8)
        assert backend.converts_pixels and not broken.any()
        assert np.abs(pixels.astype(int) - want).max() <= PIXEL_LEVELS
    assert backend.runtime_cache_path.is_file() and backend.runtime_cache_path.stat().st_size > 0
