"""Shared fixtures: a loopback HTTP server with misbehaviours, torch on one thread, the two-model
study's reference table. The fakes themselves (toy backbone, cache, index, dataset trees) are in
fakes.py."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    """GPU-only tests are skipped cleanly on machines without CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files``; ``server.behaviour[path]`` scripts one response per request:
    ``ok``, ``drop`` (send half the body, then close), ``corrupt`` (flip bytes), ``html`` (a
    login page as text/html, status 200), ``html_octet`` (the same page sent as
    application/octet-stream)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        body = self.server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        queue = self.server.behaviour.get(self.path, [])
        mode = queue.pop(0) if queue else "ok"
        self.server.requests.append((self.path, self.headers.get("Range"), mode))
        start = 0
        if self.headers.get("Range") and self.server.ranges:
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
        payload = body[start:]
        if mode.startswith("html"):
            self._send_page("text/html; charset=utf-8" if mode == "html" else "application/octet-stream")
            return
        if mode == "corrupt":
            payload = bytes(b ^ 0xFF for b in payload[:64]) + payload[64:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if mode == "drop":
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)

    def _send_page(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(LOGIN_PAGE)))
        self.end_headers()
        self.wfile.write(LOGIN_PAGE)


LOGIN_PAGE = (b"\n<!DOCTYPE html><html><head><meta charset='utf-8'><title>Google Drive - Virus scan "
              b"warning</title></head><body>Google Drive can't scan this file for viruses.</body></html>")


@pytest.fixture
def http_server() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.files, server.behaviour, server.requests, server.ranges = {}, {}, [], True
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """Torch on one thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    tiny convolutions gain nothing from threads, and on a shared 2-core machine a second OpenMP
    thread that spins waiting for a descheduled partner made such tests ~6x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def two_model_table(tmp_path_factory):
    """``reports/table.csv`` of one uninterrupted local 2-core run of the two-model study, the
    reference of the resume and SLURM tests (run once per session)."""
    import pandas as pd

    from workflow_helpers import make_workdir, snakemake, two_model_config

    workdir = make_workdir(tmp_path_factory.mktemp("two-model-reference"), two_model_config())
    snakemake(workdir, "all")
    return pd.read_csv(workdir / "reports" / "table.csv")
