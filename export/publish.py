"""Publishing an export: the staged files take the place of the previous export in one step.

Before any work, `claim` checks that the output folder holds nothing of the user's that the export would
replace: a manifest.json that export.py did not write, or a file of the new export's names that the
previous manifest does not list, is refused (a user's file is never replaced, only an earlier export).

`publish` is the commit. The new manifest is written inside the staging folder first, so every byte the
export needs is on disk before anything in the output folder changes; after that there are only renames
within one file system: the previous manifest and artifacts are moved aside into the staging folder, the
new artifacts moved in, the new manifest last. A failure at any step moves everything back, in reverse, so
the previous export stays usable; a signal is held until the commit is whole or undone.
"""

from __future__ import annotations

import os
from pathlib import Path

from core.artifacts import MANIFEST, read_manifest
from core.errors import DeployError, first_line
from core.files import atomic_write_bytes
from core.signals import interrupts_deferred


def _present(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def claim(out_dir: Path, names: list[str]) -> None:
    """DeployError, before any work, unless every file of `names` (and the manifest) that exists in `out_dir`
    belongs to an earlier export: listed in a manifest that export.py wrote (a timing cache goes with its
    engine)."""
    listed: set[str] = set()
    if _present(out_dir / MANIFEST):
        try:
            listed = {artifact["file"] for artifact in read_manifest(out_dir)["artifacts"]}
        except DeployError:
            raise DeployError(
                f"--out {out_dir}: holds a {MANIFEST} that export.py did not write; refusing to replace it "
                "(choose another --out, or remove it)"
            ) from None
    for name in names:
        owner = f"{Path(name).stem}.engine" if name.endswith(".cache") else name
        if _present(out_dir / name) and owner not in listed:
            raise DeployError(
                f"--out {out_dir}: holds {name}, which no earlier export there lists; refusing to replace it "
                "(choose another --out, or remove it)"
            )


def publish(stage: Path, out_dir: Path, names: list[str], manifest: bytes) -> None:
    """Move the staged files `names` and the `manifest` into `out_dir` in place of the previous export (module
    docstring); DeployError with the previous export left as it was when any step fails."""
    aside = stage / "previous"
    done: list[tuple[Path, Path]] = []

    def move(source: Path, target: Path) -> None:
        os.replace(source, target)
        done.append((source, target))

    with interrupts_deferred():
        try:
            atomic_write_bytes(stage / MANIFEST, manifest)
            aside.mkdir()
            for name in [MANIFEST, *names]:
                if _present(out_dir / name):
                    move(out_dir / name, aside / name)
            for name in names:
                move(stage / name, out_dir / name)
            move(stage / MANIFEST, out_dir / MANIFEST)
        except OSError as exc:
            for source, target in reversed(done):
                os.replace(target, source)
            raise DeployError(
                f"--out {out_dir}: cannot move the new export into place ({first_line(exc)}); the previous export "
                "was left as it was"
            ) from None
