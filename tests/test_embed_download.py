"""Model loading from a URL: cache, sha256 pin, atomic placement, offline errors.

Served by a local HTTP server on 127.0.0.1; nothing leaves the machine.
"""

import hashlib
import http.server
import socket
import sys
import threading

import pytest

pytest.importorskip("onnx")

from embed_fixtures import mean_colour_model  # noqa: E402
from fastretrieve import Embedder  # noqa: E402
from fastretrieve.embed import ModelDownloadError  # noqa: E402
from fastretrieve.embed.download import cache_dir  # noqa: E402

PLAIN = dict(mean=(0, 0, 0), std=(1, 1, 1), pixel_scale=1.0)


@pytest.fixture
def model_bytes(tmp_path):
    path = tmp_path / "built.onnx"
    mean_colour_model(path)
    return path.read_bytes()


@pytest.fixture
def server(model_bytes):
    """Serves the model at any path ending in model.onnx; /partial.onnx promises more
    bytes than it sends, then hangs up. Records every requested path."""
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            if self.path.endswith("model.onnx"):
                self.send_response(200)
                self.send_header("Content-Length", str(len(model_bytes)))
                self.end_headers()
                self.wfile.write(model_bytes)
            elif self.path == "/partial.onnx":
                self.send_response(200)
                self.send_header("Content-Length", str(len(model_bytes)))
                self.end_headers()
                self.wfile.write(model_bytes[: len(model_bytes) // 2])
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    httpd.server_close()
    thread.join()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("FASTRETRIEVE_CACHE", str(folder))
    return folder


def _cached_files(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_url_model_is_downloaded_once_and_verified(server, cache, model_bytes):
    base, requests = server
    pin = hashlib.sha256(model_bytes).hexdigest()
    embedder = Embedder(f"{base}/models/model.onnx", sha256=pin, **PLAIN)
    assert embedder.dim == 3 and embedder.settings["model_sha256"] == pin
    assert embedder.model_path.read_bytes() == model_bytes
    assert embedder.model_path.is_relative_to(cache)
    Embedder(f"{base}/models/model.onnx", sha256=pin, **PLAIN)
    assert requests == ["/models/model.onnx"]  # the second one came from the cache
    assert _cached_files(cache) == ["model.onnx"]


def test_checksum_mismatch_leaves_nothing_in_the_cache(server, cache):
    base, _ = server
    with pytest.raises(ModelDownloadError, match="expected 0000"):
        Embedder(f"{base}/model.onnx", sha256="0" * 64)
    assert _cached_files(cache) == []


def test_interrupted_download_leaves_nothing_in_the_cache(server, cache):
    base, _ = server
    with pytest.raises(ModelDownloadError):
        Embedder(f"{base}/partial.onnx")
    assert _cached_files(cache) == []


def test_offline_error_says_how_to_supply_the_file(cache):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ModelDownloadError, match="pass its local path") as caught:
        Embedder(f"http://127.0.0.1:{port}/model.onnx")
    assert str(cache) in str(caught.value)
    assert _cached_files(cache) == []


def test_hugging_face_names_resolve_against_hf_endpoint(server, cache, monkeypatch):
    base, requests = server
    monkeypatch.setenv("HF_ENDPOINT", base)
    assert Embedder("hf://someone/encoders/onnx/model.onnx@v1", **PLAIN).dim == 3
    assert requests == ["/someone/encoders/resolve/v1/onnx/model.onnx"]


def test_local_path_pin_is_checked(tmp_path, model_bytes):
    path = tmp_path / "local.onnx"
    path.write_bytes(model_bytes)
    with pytest.raises(ModelDownloadError, match="expected"):
        Embedder(path, sha256="f" * 64)
    with pytest.raises(FileNotFoundError, match="no model file"):
        Embedder(tmp_path / "absent.onnx")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the XDG cache location is Linux's")
def test_default_cache_is_the_platform_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTRETRIEVE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "fastretrieve"
