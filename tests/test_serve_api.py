"""The service's endpoints against the library called directly, and bad input: one real
server process on loopback for the whole module."""

from __future__ import annotations

import io
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import fastretrieve as fr
from serve_fixtures import ServerProcess, image_index, sample_images

pytest.importorskip("fastapi")

MAX_BODY_MB = 1


@pytest.fixture(scope="module")
def embedder():
    return fr.Embedder("classic")


@pytest.fixture(scope="module")
def served(tmp_path_factory, embedder):
    """(server, the library's own copy of the served index)."""
    path = image_index(tmp_path_factory.mktemp("api") / "photos.fri", embedder)
    server = ServerProcess(path, "--max-body-mb", str(MAX_BODY_MB))
    yield server, fr.Index.load(path, mmap=False)
    server.stop()


@pytest.fixture(scope="module")
def client(served):
    with served[0].client() as client:
        yield client


def _jpeg(rng, size=(96, 64)):
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG")
    return buffer.getvalue()


# -- round trip: the same answers as the library -------------------------------------------


def test_search_by_vector_matches_the_library(client, served):
    _, library = served
    queries = np.random.default_rng(1).normal(size=(3, library.dim)).astype(np.float32)
    answer = client.post("/v1/search", json={"vectors": queries.tolist(), "k": 4,
                                             "with_metadata": True})
    assert answer.status_code == 200, answer.text
    distances, ids = library.search(queries, 4)
    body = answer.json()
    assert body["metric"] == "cosine"
    for result, row_distances, row_ids in zip(body["results"], distances, ids):
        assert result["ids"] == row_ids.tolist()
        np.testing.assert_array_equal(np.float32(result["distances"]), row_distances)
        assert result["metadata"] == library.get_metadata(row_ids.tolist())


def test_k_beyond_the_index_returns_what_there_is(client, served):
    _, library = served
    answer = client.post("/v1/search", json={"vectors": [[1.0] * library.dim], "k": 50})
    assert answer.status_code == 200
    assert sorted(answer.json()["results"][0]["ids"]) == sorted(library.ids.tolist())


def test_embed_matches_the_library(client, embedder):
    images = sample_images()[:3]
    raw = client.post("/v1/embed", content=images[0],
                      headers={"content-type": "application/octet-stream"})
    assert raw.status_code == 200, raw.text
    np.testing.assert_allclose(raw.json()["vectors"], embedder.embed(images[:1]), atol=1e-6)
    multipart = client.post("/v1/embed", files=[("images", image) for image in images])
    assert multipart.status_code == 200, multipart.text
    assert multipart.json()["dim"] == embedder.dim
    np.testing.assert_allclose(multipart.json()["vectors"], embedder.embed(images), atol=1e-6)


def test_search_by_image_matches_the_library(client, served, embedder):
    _, library = served
    images = sample_images()[4:6]
    answer = client.post("/v1/search/image?k=3", files=[("images", image) for image in images])
    assert answer.status_code == 200, answer.text
    _, ids = library.search(embedder.embed(images), 3)
    assert [r["ids"] for r in answer.json()["results"]] == ids.tolist()
    assert [r["ids"][0] for r in answer.json()["results"]] == [4, 5]  # each photo finds itself


def test_add_get_remove_match_the_library(client, served, embedder):
    _, library = served
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(2, library.dim)).astype(np.float32)
    added = client.post("/v1/items", json={"vectors": vectors.tolist(), "ids": [1000, 1001],
                                           "metadata": [{"tag": "a"}, None]})
    assert added.status_code == 200, added.text
    assert added.json() == {"ids": [1000, 1001]}
    library.add(vectors, ids=[1000, 1001], metadata=[{"tag": "a"}, None])
    item = client.get("/v1/items/1000").json()
    np.testing.assert_array_equal(np.float32(item["vector"]), library.get(1000))
    assert item["metadata"] == {"tag": "a"}
    image = _jpeg(rng)
    by_image = client.post("/v1/items/images?metadata=%7B%22k%22%3A1%7D", content=image,
                           headers={"content-type": "image/jpeg"})
    assert by_image.status_code == 200, by_image.text
    (new_id,) = by_image.json()["ids"]
    library.add(embedder.embed([image]), ids=[new_id], metadata=[{"k": 1}])
    several = client.post("/v1/items/images", files=[("images", _jpeg(rng)), ("images", _jpeg(rng))],
                          data={"ids": "[2000, 2001]", "metadata": '["x", "y"]'})
    assert several.json() == {"ids": [2000, 2001]}, several.text
    assert client.get("/v1/items/2001").json()["metadata"] == "y"
    assert client.post("/v1/items/remove", json={"ids": [2000, 2001]}).json() == {"ids": [2000, 2001]}
    assert client.delete("/v1/items/1001").json() == {"ids": [1001]}
    library.remove([1001])
    queries = rng.normal(size=(5, library.dim)).astype(np.float32)
    answer = client.post("/v1/search", json={"vectors": queries.tolist(), "k": 5}).json()
    assert [r["ids"] for r in answer["results"]] == library.search(queries, 5)[1].tolist()
    assert client.get("/v1/index").json()["count"] == len(library)
    assert client.post("/v1/items/remove", json={"ids": [new_id, 1000]}).status_code == 200
    library.remove([new_id, 1000])


def test_health_metrics_and_openapi(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ready"}
    client.post("/v1/search", json={"vectors": [[0.5] * 576], "k": 1})
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'fastretrieve_requests_total{route="/v1/search",method="POST",status="200"}' in text
    assert 'fastretrieve_batch_size_count{queue="search"}' in text
    assert 'fastretrieve_queue_depth{queue="search"} 0' in text
    assert "fastretrieve_request_duration_seconds_bucket" in text
    paths = client.get("/v1/openapi.json").json()["paths"]
    assert {"/v1/search", "/v1/search/image", "/v1/embed", "/v1/items", "/v1/items/images",
            "/v1/items/remove", "/v1/items/{item_id}", "/healthz", "/readyz", "/metrics"} <= set(paths)


# -- bad input: a 4xx with a clear message, and the server stays up -------------------------


def _bomb_png(side=60_000):
    """A PNG whose header claims side x side pixels (a few KB on disk)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (side + 1) * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def _image_case(data):
    return ("post", "/v1/embed", {"content": data, "headers": {"content-type": "application/octet-stream"}})


GOOD = [0.1] * 576
BAD_INPUT = {
    "truncated image": (_image_case(sample_images()[0][:2000]), 422, "truncated"),
    "not an image": (_image_case(b"%PDF-1.4 definitely not a picture" * 10), 422, "not an image"),
    "decompression bomb": (_image_case(_bomb_png()), 422, "pixels"),
    "body over the limit": (_image_case(b"\xff" * (MAX_BODY_MB * 2**20 + 1)), 413, "limit"),
    "wrong dimension": (("post", "/v1/search", {"json": {"vectors": [[0.1] * 7], "k": 1}}), 422,
                        "576 components"),
    "NaN in a vector": (("post", "/v1/search", {"content": '{"vectors": [[NaN' + ", 0.1" * 575 + ']]}',
                                                "headers": {"content-type": "application/json"}}),
                        422, "NaN"),
    "k = 0": (("post", "/v1/search", {"json": {"vectors": [GOOD], "k": 0}}), 422, "k"),
    "k = 10^9": (("post", "/v1/search", {"json": {"vectors": [GOOD], "k": 10**9}}), 422, "k"),
    "unknown id (get)": (("get", "/v1/items/987654", {}), 404, "987654"),
    "unknown id (remove)": (("delete", "/v1/items/987654", {}), 404, "987654"),
    "malformed JSON": (("post", "/v1/search", {"content": '{"vectors": [[0.1,',
                                               "headers": {"content-type": "application/json"}}),
                       400, "malformed JSON"),
    "ragged vectors": (("post", "/v1/items", {"json": {"vectors": [GOOD, [0.1]]}}), 422, "576"),
    "metadata count": (("post", "/v1/items", {"json": {"vectors": [GOOD], "metadata": [1, 2]}}),
                       422, "metadata"),
    "negative id": (("post", "/v1/items", {"json": {"vectors": [GOOD], "ids": [-3]}}), 422, "ids"),
}


@pytest.mark.parametrize("case", BAD_INPUT, ids=list(BAD_INPUT))
def test_bad_input_is_a_clear_4xx(client, served, case):
    (method, path, options), status, phrase = BAD_INPUT[case]
    answer = client.request(method, path, **options)
    assert answer.status_code == status, answer.text
    assert phrase.lower() in answer.json()["detail"].lower()
    assert client.get("/healthz").status_code == 200
    assert served[0].process.poll() is None


@pytest.mark.parametrize("headers, phrase", [
    ({}, "needs the bearer token"),
    ({"Authorization": "Bearer not-the-token-at-all"}, "wrong bearer token"),
    ({"Authorization": "Basic dXNlcjpwYXNz"}, "needs the bearer token"),
], ids=["missing", "wrong", "not bearer"])
def test_writes_need_the_token(served, headers, phrase):
    server, library = served
    with server.client() as client:
        client.headers.pop("Authorization")
        for method, path, options in [("post", "/v1/items", {"json": {"vectors": [GOOD]}}),
                                      ("delete", "/v1/items/0", {}),
                                      ("post", "/v1/items/remove", {"json": {"ids": [0]}})]:
            answer = client.request(method, path, headers=headers, **options)
            assert answer.status_code == 401, answer.text
            assert phrase in answer.json()["detail"]
            assert answer.headers["www-authenticate"] == "Bearer"
        assert client.get("/v1/index").json()["count"] == len(library)  # nothing written
        assert client.get("/v1/items/0").status_code == 200  # reads need no token


def test_no_request_chooses_a_path(client):
    # A path where an image is expected is just bytes that are not an image.
    answer = client.post("/v1/embed", content=b"/etc/passwd",
                         headers={"content-type": "application/octet-stream"})
    assert answer.status_code == 422
    assert "not an image" in answer.json()["detail"]
    # Unknown fields (a model, a path) are refused, never interpreted.
    answer = client.post("/v1/search", json={"vectors": [GOOD], "k": 1, "model": "/tmp/x.onnx"})
    assert answer.status_code == 422
    assert "model" in answer.json()["detail"]


def test_multipart_without_images_is_refused(client):
    answer = client.post("/v1/embed", files=[("other", b"x")])
    assert answer.status_code == 422
    assert "images" in answer.json()["detail"]
    assert json.loads(client.get("/healthz").text) == {"status": "ok"}
