"""Module boundaries (README, 'Layout'), enforced on the source: who may import what.

- export/ never imports runtime/: the exporter stands alone.
- runtime/ imports from export/ at module level only the torch-free, TensorRT-free contract (TORCH_FREE);
  the exporter proper (checkpoint loading, fusion, the export pipeline) only inside functions, for the
  PyTorch backend and checkpoint-only models; the engine builder (export/trt_build.py) never.
- export.py and upscale.py only run their command (export/command.py, runtime/command.py), which parses
  arguments: at module level a command imports only export/cli.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

TORCH_FREE = {
    "export.artifacts", "export.canary", "export.cli", "export.contract", "export.cuda_device", "export.errors",
    "export.fileutil", "export.metrics", "export.tensorrt_common", "export.thresholds",
}  # fmt: skip


def imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at module level) for every import in a file."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
            found += [(name, id(node) in top) for name in [node.module, *names]]
    return found


def files(folder: str) -> list[Path]:
    return sorted((ROOT / folder).glob("*.py"))


@pytest.mark.parametrize("path", files("export"), ids=lambda p: p.name)
def test_export_never_imports_the_runtime(path: Path) -> None:
    assert not [m for m, _ in imports(path) if m == "runtime" or m.startswith("runtime.")]


@pytest.mark.parametrize("path", files("runtime"), ids=lambda p: p.name)
def test_runtime_imports_only_the_contract_at_module_level(path: Path) -> None:
    for module, top in imports(path):
        if not module.startswith("export."):
            continue
        assert not module.startswith("export.trt_build"), f"{path.name} reaches into the engine builder"
        if top:
            assert any(module == m or module.startswith(m + ".") for m in TORCH_FREE), f"{path.name}: {module}"


@pytest.mark.parametrize(("script", "command"), [("export.py", "export/command.py"), ("upscale.py", "runtime/command.py")])
def test_clis_only_parse_arguments_at_module_level(script: str, command: str) -> None:
    package = command.split("/")[0]
    assert {m for m, top in imports(ROOT / script) if top} == {"sys", f"{package}.command", f"{package}.command.main"}
    ours = {m for m, top in imports(ROOT / command) if top and m.split(".")[0] in ("export", "runtime")}
    assert ours <= {"export.cli", *(f"export.cli.{n}" for n in ("BACKENDS", "KEYS", "VIDEO_SUFFIXES", "int_at_least"))}, ours


def test_contract_modules_import_no_heavy_package() -> None:
    heavy = ("torch", "onnx", "onnxscript", "onnxruntime", "tensorrt", "tensorrt_rtx", "openvino")
    for name in TORCH_FREE:
        path = ROOT / (name.replace(".", "/") + ".py")
        assert not [m for m, top in imports(path) if top and m.split(".")[0] in heavy], name
