"""The export chain: checkpoint -> fused network -> FP32 ONNX -> FP16 ONNX -> parity gate -> engines -> manifest.

Everything is made in a staging folder inside the output folder and published only after the parity gate
and every engine build succeeded, in one step that a failure undoes (export/publish.py); the output folder
is checked before any work to hold nothing of the user's that the export would replace.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import torch

from core.artifacts import FORMAT, MODULES, engine_file, onnx_file
from core.canary import CANARY_FILE, canary_input, write_canary
from core.descriptor import LSANET
from core.errors import DeployError
from core.files import (
    atomic_write_bytes,
    make_writable_folder,
    sha256_file,
    temporary_folder,
)
from export.checkpoint import load_checkpoint
from export.fp16 import KEEP_FP32, to_fp16
from export.onnx_export import OPSET, export_fp32
from export.parity import ParityReport, enforce, run_gate
from export.publish import claim, publish
from export.trt_build import (
    BuildOptions,
    EngineResult,
    Profile,
    build_engine,
    flavor_status,
)

FLAVORS = ("rtx", "tensorrt")


@dataclass
class ExportConfig:
    ckpt: Path
    out_dir: Path = Path("engines")
    key: str | None = None
    fp16: bool = False
    flavor: str = "auto"
    profile: Profile = field(default_factory=Profile)
    options: BuildOptions = field(default_factory=BuildOptions)
    parity_images: list[Path] = field(default_factory=list)


@dataclass
class ExportResult:
    manifest: dict
    lines: list[str]


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("lsanet-deploy", "torch", "onnx", "onnxruntime", "onnxscript", "tensorrt-rtx-cu12", "tensorrt"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def _select_flavors(flavor: str) -> tuple[list[str], list[str]]:
    """(flavours to build, notes on those skipped); an explicitly asked flavour that cannot build is an error."""
    if flavor == "none":
        return [], ["engines: skipped (--flavor none)"]
    if flavor != "auto":
        if reason := flavor_status(flavor):
            raise DeployError(f"--flavor {flavor}: {reason}")
        return [flavor], []
    chosen, notes = [], []
    for name in FLAVORS:
        reason = flavor_status(name)
        if reason:
            notes.append(f"{MODULES[name]} engine: skipped ({reason})")
        else:
            chosen.append(name)
    return chosen, notes


def _artifact(path: Path, kind: str, **extra: object) -> dict:
    return {"file": path.name, "kind": kind, "bytes": path.stat().st_size, "sha256": sha256_file(path), **extra}


def run_export(cfg: ExportConfig) -> ExportResult:
    """Run the whole chain; raise DeployError (nothing written) if any step fails."""
    timings: dict[str, float] = {}
    notes: list[str] = []

    def step(name: str, start: float) -> None:
        timings[name] = round(time.perf_counter() - start, 2)

    flavors, skipped = _select_flavors(cfg.flavor)
    notes.extend(skipped)
    make_writable_folder(cfg.out_dir, "--out ")
    precision = "fp16" if cfg.fp16 else "fp32"
    engine_names = [engine_file(precision, flavor) for flavor in flavors]
    written = [onnx_file("fp32"), onnx_file("fp16"), CANARY_FILE]
    written += [f"{Path(e).stem}{suffix}" for e in engine_names for suffix in (".engine", ".json", ".cache")]
    claim(cfg.out_dir, written)  # nothing of the user's is replaced, checked before any work

    t = time.perf_counter()
    model = load_checkpoint(cfg.ckpt, cfg.key)
    ckpt_sha = sha256_file(cfg.ckpt)
    step("load checkpoint", t)
    t = time.perf_counter()
    fp32, op_counts = export_fp32(model)
    step("ONNX FP32 (fuse, trace, clean up, check)", t)
    t = time.perf_counter()
    fp16 = to_fp16(fp32)
    step("ONNX FP16", t)
    t = time.perf_counter()
    report = run_gate(model, fp32, fp16, cfg.parity_images)
    step("parity gate", t)
    enforce(report)
    if missed := report.reported_failures:
        worst = missed[0]
        notes.append(
            f"bf16 estimate misses its bounds ({worst.input}: {worst.allowed}): upscale.py --bf16 is likely to be"
            " refused by the runtime's self-check; FP32 and FP16 are unaffected"
        )

    out_dir = cfg.out_dir
    with temporary_folder(out_dir, ".staging-") as stage:
        onnx_paths = {p: stage / onnx_file(p) for p in ("fp32", "fp16")}
        for name, proto in (("fp32", fp32), ("fp16", fp16)):
            atomic_write_bytes(onnx_paths[name], proto.SerializeToString())
        canary = canary_input()
        with torch.no_grad():
            write_canary(stage / CANARY_FILE, canary, model(torch.from_numpy(canary)).numpy())
        engines: list[EngineResult] = []
        for flavor in flavors:
            t = time.perf_counter()
            engine_name = engine_file(precision, flavor)
            result = build_engine(
                flavor,
                onnx_paths[precision],
                stage / engine_name,
                precision=precision,
                opset=OPSET,
                profile=cfg.profile,
                options=cfg.options,
                reuse_from=out_dir / engine_name,
            )
            engines.append(result)
            step(f"{MODULES[flavor]} engine" + (" (reused)" if result.reused else ""), t)
            if result.reused:
                notes.append(f"{engine_name}: reused (same graph: the ONNX file and the pixel outputs; same {flavor} version, profile, options and GPU)")
        artifacts = [
            _artifact(onnx_paths["fp32"], "onnx", precision="fp32", opset=OPSET),
            _artifact(onnx_paths["fp16"], "onnx", precision="fp16", opset=OPSET, kept_fp32_nodes=list(KEEP_FP32)),
            _artifact(stage / CANARY_FILE, "canary"),
        ]
        for result in engines:
            sidecar = result.engine.with_suffix(".json")
            artifacts.append(_artifact(result.engine, "engine", flavor=result.sidecar["flavor"], sidecar=sidecar.name))
            artifacts.append(_artifact(sidecar, "sidecar"))
        manifest = {
            "format": FORMAT,
            "checkpoint": {
                "path": str(Path(cfg.ckpt).resolve()),
                "sha256": ckpt_sha,
                "key": cfg.key or "auto",
                "form": "deployed" if model.deploy else "training",
            },
            "model": LSANET.as_dict(),
            "precision": precision,
            "artifacts": artifacts,
            "onnx_op_counts": op_counts,
            "parity": {"passed": True, "summary": report.summary(), "results": [r.as_dict() for r in report.results]},
            "tools": _versions(),
            "timings_s": timings,
            "notes": notes,
        }
        # A reused engine (and its sidecar) is already in place: only what was staged moves.
        staged = [artifact["file"] for artifact in artifacts] + [cache.name for cache in stage.glob("*.cache")]
        names = [name for name in staged if (stage / name).is_file()]
        publish(stage, out_dir, names, (json.dumps(manifest, indent=2, default=float) + "\n").encode())
    return ExportResult(manifest, _summary_lines(cfg.ckpt, manifest, report, out_dir))


def _summary_lines(ckpt: Path, manifest: dict, report: ParityReport, out_dir: Path) -> list[str]:
    lines = [f"Exported {ckpt} ({manifest['checkpoint']['form']} form) to {out_dir}/:"]
    for a in manifest["artifacts"]:
        if a["kind"] != "sidecar":
            lines.append(f"  {a['file']:<32} {a['bytes'] / 1e6:7.2f} MB  sha256 {a['sha256'][:12]}")
    counts = manifest["onnx_op_counts"]
    lines.append(
        f"ONNX nodes: {sum(counts['before_cleanup'].values())} traced -> {sum(counts['after_cleanup'].values())} after clean-up"
        f" ({', '.join(f'{k} {v}' for k, v in counts['after_cleanup'].items())})"
    )
    lines.append("Parity (worst per pair and input kind; max abs in 1/255 of the clamped output, except FP32 vs PyTorch raw):")
    for name, row in report.summary().items():
        line = f"  {name:<26} max abs {row['max_abs_255']:8.4f}  PSNR {row['min_psnr_db']:6.1f} dB  NaN/Inf {row['nonfinite']}"
        if "off_vs_allowed" in row:
            line += f"  pixels off >2/255: {row['off_vs_allowed']:.0%} of allowed"
        lines.append(line)
    lines.append(
        "  (chaotic = noise/checkerboard: LSANet's own FP32 output moves as much under a +-0.5 grey input change;"
        " the rule is relative to that, see export/parity.py)"
    )
    lines.append(
        "  (bf16 = export/bf16.py's estimate of upscale.py --bf16, bf16 convolutions: reported, not gated; the"
        " runtime's self-check holds OpenVINO's real bf16 to the bf16 bounds where it runs)"
    )
    lines.append("Time: " + ", ".join(f"{k} {v:.2f} s" for k, v in manifest["timings_s"].items()))
    lines.extend(f"Note: {n}" for n in manifest["notes"])
    return lines
