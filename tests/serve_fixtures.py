"""Real `fastretrieve serve` processes on 127.0.0.1 for the service tests: started on a
port the system picks, stopped by SIGTERM (or killed), with their output kept for the
failure message."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np

import fastretrieve as fr

STARTUP_TIMEOUT_S = 60
TOKEN = "test-token-0123456789abcdef"
SAMPLES = Path(fr.__file__).with_name("samples")


class ServerProcess:
    """A running service; ``url`` is its base address."""

    def __init__(self, index_path, *options, token=TOKEN, env=None):
        environment = {**os.environ, **(env or {})}
        environment.pop("FASTRETRIEVE_TOKEN", None)
        if token is not None:
            environment["FASTRETRIEVE_TOKEN"] = token
        self.token = token
        self.output = io.StringIO()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fastretrieve", "serve", os.fspath(index_path),
             "--port", "0", *options],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment,
        )
        self.url = self._wait_for_address()
        self._reader = threading.Thread(target=self._keep_output, daemon=True)
        self._reader.start()
        self._wait_until_ready()

    @property
    def auth(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def client(self, **options) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=self.auth, timeout=30, **options)

    def _wait_for_address(self) -> str:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.write(line)
            if line.startswith("listening on "):
                return line.split()[-1]
        self.process.kill()
        raise RuntimeError(f"the service did not start:\n{self.output.getvalue()}"
                           f"{self.process.stdout.read()}")

    def _keep_output(self):
        for line in self.process.stdout:
            self.output.write(line)

    def _wait_until_ready(self):
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the service never became ready:\n{self.output.getvalue()}")

    def stop(self, timeout=60) -> int:
        """SIGTERM, then wait; returns the exit code, checked to be a graceful exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self._close()
        # uvicorn re-raises the signal it handled once shut down, so -SIGTERM is a
        # graceful exit too; the log says the index was saved.
        assert code in (0, -signal.SIGTERM), self.output.getvalue()
        assert "index saved" in self.output.getvalue(), self.output.getvalue()
        return code

    def kill(self) -> None:
        """SIGKILL: no chance to flush or save."""
        self.process.kill()
        self.process.wait(30)
        self._close()

    def _close(self):
        self._reader.join(5)
        self.process.stdout.close()


def vector_index(path, count=200, dim=16, metric="l2", seed=0):
    """A saved index of random vectors with metadata; returns (path, vectors)."""
    vectors = np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32) + 5
    index = fr.Index(dim, metric=metric)
    index.add(vectors, metadata=[{"row": i} for i in range(count)])
    index.save(path)
    return path, vectors


def sample_images() -> list[bytes]:
    """The package's sample photos, encoded."""
    return [path.read_bytes() for path in sorted(SAMPLES.glob("*.jpg"))]


def image_index(path, embedder):
    """A saved cosine index of the sample photos, recording the built-in model the way
    `fastretrieve index` does; returns the path."""
    index = fr.Index(embedder.dim, metric="cosine")
    index.attributes = {"embedder": {"format": 1, "model": "classic",
                                     "fingerprint": embedder.fingerprint,
                                     "settings": embedder.settings}}
    images = sample_images()
    index.add(embedder.embed(images), metadata=[{"n": i} for i in range(len(images))])
    index.save(path)
    return path
