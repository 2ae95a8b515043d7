"""bf16 against FP32 (and ONNX Runtime FP16) on this CPU, side by side in one run: speed per tile and end to
end, accuracy against ground truth and against FP32, and the runtime's self-check.

    python -m bench.precision --engines-dir engines [--set5 ../shared/data/Set5] [--rounds 7] [--e2e-rounds 3]

Needs `python export.py --ckpt ... --fp16` first. Everything runs through what upscale.py runs: the runtime's
backends (runtime/backends/), `Upscaler` for the images with ground truth, and upscale.py itself, as whole
processes, end to end. Timing is interleaved: each round runs every contender once, in an order rotated
from round to round, after a warm-up round (which also fills OpenVINO's model cache); reported are the
median seconds and the median of the per-round ratios to the default (OpenVINO FP32), with their range, so
that a machine shared with other work slows every contender alike.

1. `python upscale.py hubble.png out.png` (1000x872 -> 4000x3488, PNG written): the default (OpenVINO FP32),
   `--bf16` and `--backend onnxruntime --fp16`; wall time and peak RSS of the child; the written PNG against
   the default's. (First, while this process is still small: a child's ru_maxrss starts from its parent's.)
2. One 256x256 and one 512x512 LR tile (crops of scikit-image's astronaut) through each backend.
3. Y-PSNR against ground truth (Set5 x4 as shipped, and scikit-image photos downscaled with MATLAB-style
   bicubic, bicubic-pytorch) per image and mean, for FP32 and BF16 through `Upscaler(backend="openvino",
   precision=...)` (ONNX Runtime FP16 beside them), and each output against the FP32 output.
4. The self-check: whether `Upscaler(...).open()` passes, with the canary's figures against its bounds.
Without bfloat16 arithmetic (no AVX-512 BF16 or AMX) the bf16 rows say why they are missing.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from bench.e2e import ROOT, measure
from bench.tiling_quality import gt_pairs
from core.artifacts import onnx_file
from core.canary import judge, read_canary
from core.errors import DeployError
from core.metrics import psnr, y_psnr
from core.thresholds import THRESHOLDS
from runtime.backends.base import Backend
from runtime.backends.onnxruntime import ORTBackend
from runtime.backends.openvino import OpenVINOBackend, cpu_has_bf16
from runtime.upscaler import Upscaler

DEFAULT = "openvino fp32 (default)"
# (label, Upscaler settings) of the contenders; the first is the default every ratio is taken against.
CONTENDERS = {
    DEFAULT: {"backend": "openvino", "precision": "fp32"},
    "openvino bf16 (--bf16)": {"backend": "openvino", "precision": "bf16"},
    "onnxruntime fp16 (--backend onnxruntime --fp16)": {"backend": "onnxruntime", "precision": "fp16"},
}
E2E_FLAGS = {
    DEFAULT: [],
    "openvino bf16 (--bf16)": ["--bf16"],
    "onnxruntime fp16 (--backend onnxruntime --fp16)": ["--backend", "onnxruntime", "--fp16"],
}


def host() -> list[str]:
    import onnxruntime
    import openvino as ov

    info: dict[str, str] = {}
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    flags = set(info.get("flags", "").split())
    wanted = ("avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")
    core = ov.Core()
    return [
        f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"CPU: {info.get('model name')} (family {info.get('cpu family')}, model {info.get('model')}, stepping "
        f"{info.get('stepping')}), {os.cpu_count()} logical CPUs; flags: "
        + ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in wanted),
        (
            f"OpenVINO {ov.__version__.split('-')[0]}: {core.get_property('CPU', 'FULL_DEVICE_NAME')}, "
            f"capabilities {core.get_property('CPU', 'OPTIMIZATION_CAPABILITIES')}"
        ),
        f"onnxruntime {onnxruntime.__version__}, Python {platform.python_version()}",
        f"load average at start (1/5/15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
    ]


def interleaved(tasks: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Seconds of each task per round: one warm-up round, then `rounds` rounds, the order rotated each round."""
    names = list(tasks)
    for name in names:
        tasks[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            tasks[name]()
            times[name].append(time.perf_counter() - start)
    return times


def speedup(times: dict[str, list[float]], name: str) -> str:
    """The default's time over `name`'s, per round: median (min-max)."""
    ratios = [d / t for d, t in zip(times[DEFAULT], times[name])]
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"


def versus(reference: np.ndarray, result: np.ndarray) -> tuple[float, float, float]:
    """(PSNR dB, max abs levels, share of values off by > 2 levels) of two uint8 images."""
    diff = np.abs(reference.astype(np.int16) - result.astype(np.int16))
    return psnr(reference, result, 255.0), float(diff.max()), float((diff > 2).mean())


def own_peak_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))


def to_uint8(batch: np.ndarray) -> np.ndarray:
    return np.round(np.clip(batch[0].transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8)


def tiles(engines: Path, rounds: int, has_bf16: bool) -> None:
    fp32, fp16 = engines / onnx_file("fp32"), engines / onnx_file("fp16")
    backends: dict[str, Backend] = {DEFAULT: OpenVINOBackend(fp32, "fp32")}
    if has_bf16:
        backends["openvino bf16 (--bf16)"] = OpenVINOBackend(fp32, "bf16")
    backends["onnxruntime fp16 (--backend onnxruntime --fp16)"] = ORTBackend(fp16, "fp16", "cpu")
    backends["onnxruntime fp32 (--backend onnxruntime)"] = ORTBackend(fp32, "fp32", "cpu")
    photo = data.astronaut()
    crops = {side: photo[256 - side // 2 : 256 + side // 2, 256 - side // 2 : 256 + side // 2] for side in (256, 512)}
    inputs = {side: np.ascontiguousarray(c.transpose(2, 0, 1)[None]).astype(np.float32) / 255 for side, c in crops.items()}
    for backend in backends.values():
        backend.activate()
    results = {}
    for side, x in inputs.items():
        times = interleaved({name: (lambda b=b, x=x: b.infer(x)) for name, b in backends.items()}, rounds)
        reference = to_uint8(backends[DEFAULT].infer(x))
        results[side] = {
            name: (statistics.median(times[name]), speedup(times, name), versus(reference, to_uint8(b.infer(x))))
            for name, b in backends.items()
        }
    for backend in backends.values():
        backend.deactivate()
    print(f"\n### Per tile (astronaut crops; median of {rounds} interleaved rounds after a warm-up; speed-up = "
          "median of per-round OpenVINO FP32 / this, with its range)\n")  # fmt: skip
    print("| backend | 256x256 s | speed-up | 512x512 s | speed-up | 512x512 output vs FP32: PSNR dB, max levels |")
    print("|---|---|---|---|---|---|")
    for name in backends:
        (s256, x256, _), (s512, x512, (db, top, _)) = results[256][name], results[512][name]
        print(f"| {name} | {s256:.3f} | {x256} | {s512:.3f} | {x512} | {db:.1f}, {top:.0f} |")
    if not has_bf16:
        print("| openvino bf16 (--bf16) | - | not measured: no bfloat16 arithmetic on this CPU | | | |")


def end_to_end(engines: Path, rounds: int, has_bf16: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        photo = Path(tmp) / "hubble.png"
        cv2.imwrite(str(photo), data.hubble_deep_field()[..., ::-1])
        flags = {name: f for name, f in E2E_FLAGS.items() if has_bf16 or "--bf16" not in f}
        outputs = {name: Path(tmp) / f"out{i}.png" for i, name in enumerate(flags)}
        base = [sys.executable, "upscale.py", str(photo)]
        commands = {name: [*base, str(outputs[name]), "--overwrite", "--engines-dir", str(engines), *f] for name, f in flags.items()}
        chosen = {}
        for name, command in commands.items():  # the warm-up round, which also says which backend ran
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{' '.join(command)} failed: {done.stderr}")
            chosen[name] = next((line for line in done.stderr.splitlines() if line.startswith("backend:")), "?")
        names = list(commands)
        walls: dict[str, list[float]] = {name: [] for name in names}
        rss: dict[str, float] = {name: 0.0 for name in names}
        floor = 0.0  # this process's own peak at the forks: no child's ru_maxrss can read below it
        for r in range(rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                floor = max(floor, own_peak_mb())
                wall, peak = measure([*commands[name], "--quiet"])
                walls[name].append(wall)
                rss[name] = max(rss[name], peak)
                print(f"round {r + 1}  {name:<48} {wall:6.2f} s  {peak:5.0f} MB peak RSS")
        reference = cv2.imread(str(outputs[DEFAULT]), cv2.IMREAD_UNCHANGED)
        compared = {name: versus(reference, cv2.imread(str(path), cv2.IMREAD_UNCHANGED)) for name, path in outputs.items()}
    print(f"\n### End to end: upscale.py on hubble_deep_field 1000x872 -> 4000x3488 PNG, whole processes (median of "
          f"{rounds} interleaved rounds after a warm-up round; speed-up = median of per-round ratios, with range)\n")  # fmt: skip
    print(f"(peak RSS: the child's ru_maxrss; Linux starts it from the parent's peak at the fork, here {floor:.0f} MB)\n")
    print("| command | backend it ran | median wall s | speed-up | peak RSS MB | PNG vs default: PSNR dB, max levels, > 2 levels |")
    print("|---|---|---|---|---|---|")
    for name in names:
        db, top, share = compared[name]
        flag = " ".join(E2E_FLAGS[name]) or "(no flag)"
        print(f"| upscale.py {flag} | {chosen[name].removeprefix('backend: ')} | {statistics.median(walls[name]):.2f} "
              f"| {speedup(walls, name)} | {rss[name]:.0f} | {db:.1f}, {top:.0f}, {share:.3%} |")  # fmt: skip


def accuracy(engines: Path, set5: Path | None) -> None:
    pairs = gt_pairs(set5)
    outputs: dict[str, dict[str, np.ndarray]] = {}
    checks: dict[str, str] = {}
    for name, settings in CONTENDERS.items():
        up = Upscaler(engines_dir=engines, **settings)
        try:
            up.open()  # loads the backend and runs the runtime's self-check: raises if the canary misses its bounds
        except DeployError as exc:  # reported, not fatal: e.g. no bfloat16 arithmetic on this CPU
            checks[name] = f"refused: {str(exc).splitlines()[0]}"
            continue
        with up:
            backend = up.choice.backend
            inputs, reference = read_canary(up.model.canary)
            out = backend.infer(inputs)
            clipped, expected = np.clip(out, 0, 1), np.clip(reference, 0, 1)
            verdict = judge(out, inputs, reference, backend.precision) or "pass"
            t = THRESHOLDS
            bounds = {
                "fp32": f"max abs <= {t.fp32_max_abs:g} (raw)",
                "bf16": f">= {t.bf16_min_psnr} dB, <= {t.bf16_max_abs * 255:g}/255",
                "fp16": f">= {t.fp16_min_psnr} dB, <= {t.fp16_max_abs * 255:g}/255",
            }[backend.precision]
            checks[name] = (
                f"{psnr(expected, clipped):.1f} dB, max {np.abs(clipped - expected).max() * 255:.2f}/255 "
                f"(raw max abs {np.abs(out - reference).max():.1e}) | {bounds} | open() {verdict}"
            )
            outputs[name] = {key: up(lr) for key, lr, _ in pairs}
    ran = list(outputs)
    print("\n### Accuracy: Y-PSNR against ground truth (dB; border 4; Set5 x4 as shipped, photos downscaled with "
          "MATLAB-style bicubic), through Upscaler(backend=..., precision=...)\n")  # fmt: skip
    short = {name: name.split(" (")[0] for name in ran}
    others = [name for name in ran if name != DEFAULT]
    print("| image | " + " | ".join(short[n] for n in ran) + " | " + " | ".join(f"{short[n]} - fp32" for n in others)
          + " | " + " | ".join(f"{short[n]} vs fp32: RGB PSNR dB, max levels, > 2 levels" for n in others) + " |")  # fmt: skip
    print("|---" * (1 + len(ran) + 2 * len(others)) + "|")
    groups: dict[str, list[tuple[list[float], list[float]]]] = {"Set5": [], "photos": []}
    for key, _, hr in pairs:
        ys = [y_psnr(outputs[n][key], hr) for n in ran]
        against = [versus(outputs[DEFAULT][key], outputs[n][key]) for n in others]
        groups["Set5" if key.startswith("img_") else "photos"].append((ys, [a[0] for a in against]))
        print(f"| {key} | " + " | ".join(f"{y:.3f}" for y in ys) + " | "
              + " | ".join(f"{y - ys[0]:+.3f}" for y in ys[1:]) + " | "
              + " | ".join(f"{db:.1f}, {top:.0f}, {share:.3%}" for db, top, share in against) + " |")  # fmt: skip
    for group, rows in groups.items():
        if rows:
            means = [statistics.mean(r[0][i] for r in rows) for i in range(len(ran))]
            worst = [min(r[1][i] for r in rows) for i in range(len(others))]
            print(f"| **{group} mean** | " + " | ".join(f"{m:.3f}" for m in means) + " | "
                  + " | ".join(f"{m - means[0]:+.3f}" for m in means[1:]) + " | "
                  + " | ".join(f"worst {w:.1f} dB" for w in worst) + " |")  # fmt: skip
    print("\n### Self-check: the canary (1x3x32x64) against the export's FP32 reference, clamped\n")
    print("| backend | canary vs reference | bounds | self-check |\n|---|---|---|---|")
    for name in CONTENDERS:
        cells = checks[name].split(" | ")
        print(f"| {name} | " + " | ".join(cells + ["-"] * (3 - len(cells))) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engines-dir", type=Path, default=Path("engines"))
    parser.add_argument("--set5", type=Path, default=ROOT.parent / "shared" / "data" / "Set5")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds per tile size")
    parser.add_argument("--e2e-rounds", type=int, default=3)
    args = parser.parse_args()
    engines = args.engines_dir.resolve()
    set5 = args.set5 if args.set5.is_dir() else None
    has_bf16 = cpu_has_bf16()
    print("\n".join(host()))
    if not has_bf16:
        print("bf16: not measured, this CPU has no bfloat16 arithmetic (AVX-512 BF16 or AMX)")
    # End to end first: a child's peak RSS (ru_maxrss) starts from this process's own peak at the fork, so it
    # is only the child's while this process is still small (printed with the table).
    end_to_end(engines, args.e2e_rounds, has_bf16)
    tiles(engines, args.rounds, has_bf16)
    accuracy(engines, set5)
    print(f"\nload average at the end (1/5/15 min): {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
