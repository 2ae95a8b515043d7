"""Fetch the public LSANet checkpoint into the user's cache, verified by sha256 before use.

Source: ../shared/weights/SOURCE.md (the NTIRE 2024 ESR challenge's model zoo, MIT licence).
"""

from __future__ import annotations

import hashlib
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

from core.errors import FetchError
from core.files import atomic_path, sha256_file

PUBLIC_URL = "https://github.com/Amazingren/NTIRE2024_ESR/raw/main/model_zoo/team44_LSANet.pth"
PUBLIC_SHA256 = "4a781d3b83a670931ae57d8e67c89c3dcda2d212d6be357edf536312d80587c0"
FILENAME = "team44_LSANet.pth"
# The whole download is bounded in time and size, not only each read: a mirror that trickles bytes or
# streams without end cannot hang the run. The checkpoint is 1.2 MB; the bounds leave a slow link room.
DEADLINE_S = 300.0
MAX_BYTES = 64 << 20

def cache_dir() -> Path:
    """$LSANET_CACHE, else $XDG_CACHE_HOME/lsanet-deploy, else ~/.cache/lsanet-deploy."""
    if explicit := os.environ.get("LSANET_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lsanet-deploy"


def fetch_checkpoint(
    url: str | None = None, sha256: str = PUBLIC_SHA256, timeout: float = 60.0, deadline_s: float = DEADLINE_S
) -> Path:
    """The cached checkpoint, downloading it first if absent or damaged; never returns an unverified file.

    The URL is `url`, else $LSANET_WEIGHTS_URL (a mirror), else the public one; the sha256 is always checked.
    `timeout` bounds each wait for bytes, `deadline_s` the whole download (plus at most one `timeout`).
    """
    url = url or os.environ.get("LSANET_WEIGHTS_URL") or PUBLIC_URL
    target = cache_dir() / FILENAME
    if target.is_file() and sha256_file(target) == sha256:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    ends = time.monotonic() + deadline_s
    try:
        with urllib.request.urlopen(url, timeout=min(timeout, deadline_s)) as response, atomic_path(target) as tmp:
            with tmp.open("wb") as f:
                # read1: whatever one receive brings, so the deadline is looked at however slowly bytes come
                for chunk in iter(lambda: response.read1(1 << 20), b""):
                    digest.update(chunk)
                    f.write(chunk)
                    size += len(chunk)
                    if size > MAX_BYTES:
                        raise FetchError(f"{url}: sent more than {MAX_BYTES >> 20} MiB, not the checkpoint; not used")
                    if time.monotonic() > ends:
                        raise FetchError(
                            f"{url}: the download took longer than {deadline_s:g} s ({size} bytes came); stopped,"
                            " nothing kept (pass --ckpt with a local copy, or another $LSANET_WEIGHTS_URL)"
                        )
            if digest.hexdigest() != sha256:
                raise FetchError(
                    f"{url}: downloaded file has sha256 {digest.hexdigest()[:16]}..., expected {sha256[:16]}...; not used"
                )
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise FetchError(
            f"cannot download the public checkpoint from {url}: {exc} (offline? pass --ckpt, --onnx or --engine,"
            " or --engines-dir / $LSANET_ENGINES with a folder export.py wrote)"
        ) from None
    return target
