"""runtime/model/fetch.py against mirrors that misbehave on 127.0.0.1: the whole download is bounded in
time and size, not only each read, and nothing unverified is ever kept."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import FetchError
from runtime.model import fetch


class _Trickle(http.server.BaseHTTPRequestHandler):
    """One byte every 50 ms, far below any per-read timeout, for as long as the client reads."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200)
        self.send_header("Content-Length", str(10**6))
        self.end_headers()
        try:
            for _ in range(10**6):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError):
            return

    def log_message(self, *_args: object) -> None:
        return


class _Flood(_Trickle):
    """Bytes as fast as they go, without end (no Content-Length)."""

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"x" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            return


def _serve(handler: type) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/team44_LSANet.pth"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("LSANET_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_a_trickling_mirror_is_stopped_at_the_deadline(cache: Path) -> None:
    for url in _serve(_Trickle):
        started = time.monotonic()
        with pytest.raises(FetchError, match="took longer than 1 s"):
            fetch.fetch_checkpoint(url, timeout=5.0, deadline_s=1.0)
        # The deadline plus one receive at most; without the bound this read would go on for 14 hours.
        assert time.monotonic() - started < 1.0 + 1.0
    assert not any(cache.iterdir())  # nothing kept, not even a temporary


def test_a_mirror_that_streams_without_end_is_stopped(cache: Path, monkeypatch) -> None:
    monkeypatch.setattr(fetch, "MAX_BYTES", 4 << 20)
    for url in _serve(_Flood):
        with pytest.raises(FetchError, match="sent more than 4 MiB"):
            fetch.fetch_checkpoint(url, timeout=5.0, deadline_s=30.0)
    assert not any(cache.iterdir())
