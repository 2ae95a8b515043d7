"""The import rules of docs/architecture.md, enforced on the source: every import, at module level or
inside a function, goes down the layers, never up and never in a circle.

- `core/` imports neither `export/` nor `runtime/`, and no heavy package at module level.
- `export/` never imports `runtime/`; `runtime/` imports `export/` only inside functions, for a
  checkpoint (the PyTorch backend, a checkpoint-only model's export into the cache), never the engine
  builder.
- Inside `runtime/`, each part imports only parts of a lower rank (or its own subpackage).
- `export.py` and `upscale.py` import only their command; a command imports only `core/` at module level.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Rank of each part of runtime/: an import must go to a lower rank, or stay within the part itself.
RUNTIME_RANKS = {
    "runtime.cgroup": 0, "runtime.cores": 1, "runtime.memory": 1, "runtime.tiling": 1,
    "runtime.images": 2,
    "runtime.settings": 3,
    "runtime.model": 4, "runtime.jobs": 4,
    "runtime.backends": 5,
    "runtime.upscaler": 6,
    "runtime.video": 7, "runtime.cluster": 7,
    "runtime.app": 8,
    "runtime.command": 9,
}  # fmt: skip
HEAVY = ("torch", "onnx", "onnxscript", "onnxruntime", "tensorrt", "tensorrt_rtx", "openvino", "av", "ray", "cv2")
# What runtime/ may take from the exporter, inside functions only.
EXPORT_FOR_RUNTIME = ("export.checkpoint", "export.fuse", "export.onnx_export", "export.pipeline")


def imports(path: Path) -> list[tuple[str, bool]]:
    """(module, at module level) for every import in a file, `from a import b` also as `a.b`."""
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


def module_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def part(module: str) -> str | None:
    """The runtime part a module belongs to (its RUNTIME_RANKS key), None outside runtime's parts."""
    return next((p for p in RUNTIME_RANKS if module == p or module.startswith(p + ".")), None)


def under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize("path", files("core"), ids=module_of)
def test_core_imports_neither_side_nor_heavy_packages(path: Path) -> None:
    for module, top in imports(path):
        assert not under(module, "export") and not under(module, "runtime"), f"{module_of(path)} imports {module}"
        assert not (top and module.split(".")[0] in HEAVY), f"{module_of(path)} imports {module} at module level"


@pytest.mark.parametrize("path", files("export"), ids=module_of)
def test_export_never_imports_the_runtime(path: Path) -> None:
    assert not [m for m, _ in imports(path) if under(m, "runtime")]


@pytest.mark.parametrize("path", files("runtime"), ids=module_of)
def test_runtime_imports_go_down_the_layers(path: Path) -> None:
    here = module_of(path)
    if here == "runtime.__init__":  # the public facade: it names everything, lazily
        return
    mine = part(here)
    assert mine is not None, f"{here} belongs to no part of runtime (add it to RUNTIME_RANKS)"
    for module, top in imports(path):
        if under(module, "export"):
            assert not top, f"{here} imports {module} at module level"
            assert any(under(module, allowed) for allowed in EXPORT_FOR_RUNTIME), f"{here} imports {module}"
        elif module == "runtime":
            raise AssertionError(f"{here} imports the facade `runtime`; import the module itself")
        elif under(module, "runtime"):
            theirs = part(module)
            assert theirs == mine or RUNTIME_RANKS[theirs] < RUNTIME_RANKS[mine], f"{here} reaches up into {module}"


@pytest.mark.parametrize(("script", "command"), [("export.py", "export/command.py"), ("upscale.py", "runtime/command.py")])
def test_clis_only_parse_arguments_at_module_level(script: str, command: str) -> None:
    package = command.split("/")[0]
    assert {m for m, top in imports(ROOT / script) if top} == {"sys", f"{package}.command", f"{package}.command.main"}
    ours = {m for m, top in imports(ROOT / command) if top and m.split(".")[0] in ("core", "export", "runtime")}
    assert all(under(m, "core.vocabulary") for m in ours), ours


def test_the_rules_see_imports_inside_functions(tmp_path: Path) -> None:
    """The walker is what the rules rest on: an import hidden in a function is found, and known as such."""
    (tmp_path / "m.py").write_text("import os\n\ndef f():\n    from runtime.app import upscale_files\n")
    assert imports(tmp_path / "m.py") == [("os", True), ("runtime.app", False), ("runtime.app.upscale_files", False)]
