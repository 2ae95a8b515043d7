"""export/publish.py: an export replaces only an earlier export, and its commit is one step that a failure
at any write or rename undoes, leaving the previous export usable (fault injection on a real export)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from core.artifacts import MANIFEST, load_manifest
from core.errors import DeployError
from core.files import sha256_file, temporary_folder
from export import publish as publish_module
from export.publish import claim, publish


def _files(folder: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def previous(tmp_path: Path, exported) -> Path:
    """A copy of a real export: the previous export a new one replaces."""
    out = tmp_path / "engines"
    shutil.copytree(exported[0], out)
    (out / "notes.txt").write_text("the user's own file, which no export touches")
    return out


def _stage_new(stage: Path, previous: Path) -> tuple[list[str], bytes]:
    """A 'new export' in the staging folder: every artifact with changed bytes, and its manifest."""
    manifest = json.loads((previous / MANIFEST).read_text())
    for artifact in manifest["artifacts"]:
        data = (previous / artifact["file"]).read_bytes() + b"new"
        (stage / artifact["file"]).write_bytes(data)
        artifact["sha256"] = sha256_file(stage / artifact["file"])
    names = [a["file"] for a in manifest["artifacts"]]
    return names, json.dumps(manifest).encode()


def test_a_publish_replaces_the_previous_export_and_nothing_else(previous: Path) -> None:
    with temporary_folder(previous, ".staging-") as stage:
        names, manifest = _stage_new(stage, previous)
        publish(stage, previous, names, manifest)
    load_manifest(previous)  # every file the new manifest lists is there with its sha256
    assert (previous / MANIFEST).read_bytes() == manifest
    assert (previous / "notes.txt").is_file()
    assert not [p for p in previous.iterdir() if p.name.startswith(".staging-")]


def _failing_at(count: int, real):
    calls = {"n": 0}

    def fail(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == count:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    return fail, calls


def test_a_failure_at_any_step_of_the_commit_leaves_the_previous_export_usable(previous: Path, monkeypatch) -> None:
    before = _files(previous)
    load_manifest(previous)
    # Count the steps of a whole commit: every rename, and the one write (the staged manifest).
    with temporary_folder(previous.parent, ".count-") as scratch:
        shutil.copytree(previous, scratch / "copy")
        counter, renames = _failing_at(-1, os.replace)
        monkeypatch.setattr(publish_module.os, "replace", counter)
        with temporary_folder(scratch / "copy", ".staging-") as stage:
            names, manifest = _stage_new(stage, scratch / "copy")
            publish(stage, scratch / "copy", names, manifest)
        monkeypatch.undo()
    steps = renames["n"]
    # The staged manifest's own atomic rename, then every old file aside and every new one in, manifest included.
    assert steps == 1 + 2 * (len(names) + 1)
    failures = [("write", 1)] + [("rename", k) for k in range(1, steps + 1)]
    for kind, k in failures:
        if kind == "write":
            fail, _ = _failing_at(k, publish_module.atomic_write_bytes)
            monkeypatch.setattr(publish_module, "atomic_write_bytes", fail)
        else:
            fail, _ = _failing_at(k, os.replace)
            monkeypatch.setattr(publish_module.os, "replace", fail)
        with pytest.raises(DeployError, match="previous export was left as it was"):
            with temporary_folder(previous, ".staging-") as stage:
                names, manifest = _stage_new(stage, previous)
                publish(stage, previous, names, manifest)
        monkeypatch.undo()
        assert _files(previous) == before, f"{kind} {k}"
        load_manifest(previous)


def test_a_foreign_manifest_or_an_unlisted_file_is_never_replaced(tmp_path: Path, previous: Path) -> None:
    names = [a["file"] for a in json.loads((previous / MANIFEST).read_text())["artifacts"]]
    claim(previous, names)  # an earlier export of ours: fine
    claim(tmp_path / "empty", names)  # nothing there: fine
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / MANIFEST).write_text('{"my": "own config"}')
    with pytest.raises(DeployError, match=f"holds a {MANIFEST} that export.py did not write"):
        claim(foreign, names)
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / names[0]).write_text("someone else's file of that name")
    with pytest.raises(DeployError, match=f"holds {names[0]}, which no earlier export there lists"):
        claim(stray, names)


def test_export_into_a_folder_with_a_foreign_manifest_refuses_before_any_work(tmp_path: Path, weights_path: Path) -> None:
    from tests.conftest import assert_one_line_error, run_script

    out = tmp_path / "mine"
    out.mkdir()
    (out / MANIFEST).write_text('{"settings": 1}\n')
    result = run_script("export.py", "--ckpt", str(weights_path), "--out", str(out), "--flavor", "none")
    assert_one_line_error(result, f"holds a {MANIFEST} that export.py did not write")
    assert (out / MANIFEST).read_text() == '{"settings": 1}\n'
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST]
