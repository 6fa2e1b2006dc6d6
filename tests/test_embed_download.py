"""Model loading from a URL: https only, size cap, cache, sha256 pin, atomic placement,
offline errors.

Served by a local HTTPS server on 127.0.0.1 with a certificate made for the test (and the
downloader told to trust it); nothing leaves the machine.
"""

import hashlib
import http.server
import shutil
import socket
import ssl
import subprocess
import sys
import threading

import pytest

pytest.importorskip("onnx")

from embed_fixtures import mean_colour_model  # noqa: E402
from fastretrieve import Embedder  # noqa: E402
from fastretrieve.embed import ModelDownloadError  # noqa: E402
from fastretrieve.embed import download  # noqa: E402
from fastretrieve.embed.download import cache_dir  # noqa: E402

PLAIN = dict(mean=(0, 0, 0), std=(1, 1, 1), pixel_scale=1.0)


@pytest.fixture
def model_bytes(tmp_path):
    path = tmp_path / "built.onnx"
    mean_colour_model(path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1: (certificate file, key file)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


def _serve(handler, context=None):
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if context is not None:
        httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    return httpd, thread


@pytest.fixture
def server(model_bytes, certificate, monkeypatch):
    """HTTPS: serves the model at any path ending in model.onnx; /partial.onnx promises
    more bytes than it sends, then hangs up; /to-http.onnx redirects to the same file over
    plain http; /huge.onnx announces 10 GB. Records every requested path (both servers)."""
    requests = []
    cert, key = certificate
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(cert))
    monkeypatch.setattr(download, "_ssl_context", lambda: client_context)
    ports = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            if self.path == "/to-http.onnx":
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{ports['http']}/model.onnx")
                self.end_headers()
            elif self.path == "/huge.onnx":
                self.send_response(200)
                self.send_header("Content-Length", str(10 * 10**9))
                self.end_headers()
            elif self.path.endswith("model.onnx"):
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

    servers = [_serve(Handler, server_context), _serve(Handler)]
    ports["http"] = servers[1][0].server_address[1]
    yield f"https://127.0.0.1:{servers[0][0].server_address[1]}", requests
    for httpd, thread in servers:
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
        Embedder(f"https://127.0.0.1:{port}/model.onnx")
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


def test_plain_http_urls_are_refused_before_any_connection(server, cache):
    base, requests = server
    plain = base.replace("https://", "http://")
    with pytest.raises(ModelDownloadError, match="https only"):
        Embedder(f"{plain}/model.onnx", **PLAIN)
    assert requests == [] and _cached_files(cache) == []


def test_a_redirect_from_https_to_http_is_refused(server, cache):
    base, requests = server
    with pytest.raises(ModelDownloadError, match="redirects to http://.*https only"):
        Embedder(f"{base}/to-http.onnx", **PLAIN)
    assert requests == ["/to-http.onnx"]  # the plain-http server was never asked
    assert _cached_files(cache) == []


def test_downloads_are_capped_in_size(server, cache, model_bytes, monkeypatch):
    base, _ = server
    with pytest.raises(ModelDownloadError, match="more than the .*-byte limit"):
        Embedder(f"{base}/huge.onnx", **PLAIN)
    monkeypatch.setattr(download, "MAX_DOWNLOAD_BYTES", len(model_bytes) - 1)
    monkeypatch.setattr(download, "CHUNK_BYTES", 64)  # the limit is checked as bytes arrive
    with pytest.raises(ModelDownloadError, match="limit"):
        Embedder(f"{base}/models/model.onnx", **PLAIN)
    assert _cached_files(cache) == []


def test_a_cached_pinned_file_is_verified_again_on_use(server, cache, model_bytes):
    base, requests = server
    pin = hashlib.sha256(model_bytes).hexdigest()
    first = Embedder(f"{base}/models/model.onnx", sha256=pin, **PLAIN)
    first.model_path.write_bytes(model_bytes + b"tampered")
    with pytest.raises(ModelDownloadError, match=f"expected {pin}"):
        Embedder(f"{base}/models/model.onnx", sha256=pin, **PLAIN)
