"""Whitening: the transform itself, and `fastretrieve fit-whitening` / `evaluate --whitening`
on an index of real photos (train, validate, apply -- or leave the index alone)."""

from __future__ import annotations

import numpy as np
import pytest

from cli_fixtures import run_cli, run_json
from embed_fixtures import query_photos
from fastretrieve import Index
from fastretrieve.embed import Whitening


def correlated(count=400, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, dim)) @ rng.normal(size=(dim, dim)) + 5.0


def test_full_whitening_gives_unit_covariance_on_its_training_data():
    data = correlated()
    whitening = Whitening.fit(data, dims=8, shrinkage=0.0)
    projected = (data - whitening.mean) @ whitening.projection
    np.testing.assert_allclose(np.cov(projected, rowvar=False), np.eye(8), atol=1e-4)
    vectors = whitening.transform(data)
    assert vectors.shape == (400, 8) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_dimensions_are_capped_by_the_data_and_the_record_round_trips():
    whitening = Whitening.fit(correlated(count=30, dim=12), dims=64, shrinkage=0.5)
    assert (whitening.input_dim, whitening.dim) == (12, 12)
    assert Whitening.fit(correlated(count=25, dim=40), dims=64).dim == 24  # n - 1
    again = Whitening.from_record(whitening.to_record())
    np.testing.assert_array_equal(again.projection, whitening.projection)
    np.testing.assert_array_equal(again.mean, whitening.mean)


def test_bad_input_and_malformed_records_are_refused():
    with pytest.raises(ValueError, match="at least 20 vectors"):
        Whitening.fit(correlated(count=5))
    whitening = Whitening.fit(correlated())
    with pytest.raises(ValueError, match=r"shape \(n, 8\)"):
        whitening.transform(np.zeros((2, 3)))
    record = whitening.to_record()
    for broken in ({**record, "dim": 99}, {**record, "mean": "%%%"}, {**record, "format": 7},
                   {k: v for k, v in record.items() if k != "projection"}):
        with pytest.raises(ValueError, match="whitening record"):
            Whitening.from_record(broken)


@pytest.fixture(scope="module")
def views_folder(tmp_path_factory):
    """90 photos in 15 class folders: six crops (30-50 % of the area) of each of 15 photos."""
    folder = tmp_path_factory.mktemp("views")
    rng = np.random.default_rng(0)
    for name, image in query_photos().items():
        image.thumbnail((320, 320))
        (folder / name).mkdir()
        for view in range(6):
            side = np.sqrt(rng.uniform(0.3, 0.5))
            w, h = round(image.width * side), round(image.height * side)
            x, y = int(rng.integers(0, image.width - w + 1)), int(rng.integers(0, image.height - h + 1))
            image.crop((x, y, x + w, y + h)).save(folder / name / f"{view}.jpg", quality=90)
    return folder


def test_fit_whitening_applies_what_helps_and_every_later_vector_follows(views_folder, tmp_path):
    index_path = tmp_path / "views.fri"
    assert run_cli("index", views_folder, "-o", index_path, "-r", "--model", "classic", "-q").returncode == 0
    _, report = run_json("fit-whitening", index_path, "--format", "json")
    # Measured: 18 held-out hard edits, recall@1 0.61 -> 0.72, MRR 0.78 -> 0.86.
    assert report["applied"] is True and report["held_out"] == 18 and report["trained_on"] == 72
    assert report["after"]["mrr"] > report["before"]["mrr"]
    index = Index.load(index_path)
    record = index.attributes["embedder"]
    assert index.dim == record["whitening"]["dim"] == report["dims"] == 71 and len(index) == 90
    assert record["whitening"]["validation"]["after"] == report["after"]

    # Queries are whitened too: a photo of the index finds itself, at similarity 1.
    own = views_folder / "coffee" / "2.jpg"
    _, answers = run_json("search", index_path, own, "-k", "2", "--format", "json")
    assert answers[0]["results"][0]["path"] == str(own) and answers[0]["results"][0]["score"] > 0.999
    # A new image is whitened on its way in.
    (views_folder / "coffee" / "copy.jpg").write_bytes(own.read_bytes())
    try:
        assert run_cli("index", views_folder, "-o", index_path, "-r", "-q").returncode == 0
    finally:
        (views_folder / "coffee" / "copy.jpg").unlink()
    index = Index.load(index_path)
    by_path = {meta["path"]: item for item, meta in zip(index.ids.tolist(), index.get_metadata(index.ids.tolist()))}
    copy, original = index.get([by_path[str(views_folder / "coffee" / "copy.jpg")], by_path[str(own)]])
    assert copy @ original > 0.999

    again = run_cli("fit-whitening", index_path)
    assert again.returncode == 2 and "already whitened" in again.stderr
    dedup = run_cli("dedup", index_path)  # similarities changed: no measured default
    assert dedup.returncode == 2 and "--threshold" in dedup.stderr


def test_fit_whitening_that_does_not_help_leaves_the_index_untouched(views_folder, tmp_path):
    index_path = tmp_path / "views.fri"
    assert run_cli("index", views_folder, "-o", index_path, "-r", "--model", "classic", "-q").returncode == 0
    before = index_path.read_bytes()
    result, report = run_json("fit-whitening", index_path, "--dims", "1", "--format", "json")
    assert report["applied"] is False and report["after"]["mrr"] < report["before"]["mrr"]
    assert index_path.read_bytes() == before
    text = run_cli("fit-whitening", index_path, "--dims", "1")
    assert "not applied" in text.stdout and index_path.read_bytes() == before


def test_evaluate_reports_before_and_after_whitening(views_folder):
    _, report = run_json("evaluate", views_folder, "--model", "classic", "--whitening", "--format", "json")
    assert report["whitening"]["before"] == report["overall"] and report["overall"]["queries"] == 90
    assert set(report["whitening"]["after"]) == set(report["overall"])
    assert report["whitening"]["after"] != report["whitening"]["before"]
