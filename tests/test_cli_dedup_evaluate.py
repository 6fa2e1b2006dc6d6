"""``fastretrieve dedup`` and ``fastretrieve evaluate`` on folders built here from real photos."""

from __future__ import annotations

import io
import shutil

import pytest
from PIL import Image

from cli_fixtures import PHOTOS, edited, run_cli, run_json, small_photo, write_bad_files, write_photos
from embed_fixtures import mean_colour_model


@pytest.fixture(scope="module")
def folder_with_duplicates(tmp_path_factory):
    """The distinct photos plus planted copies; returns (folder, expected groups)."""
    folder = tmp_path_factory.mktemp("dedup")
    write_photos(folder)
    write_bad_files(folder)
    (folder / "astronaut-edited.jpg").write_bytes(edited(small_photo("astronaut")))
    half = small_photo("coffee")
    half.resize((half.width // 2, half.height // 2)).save(folder / "coffee-small.png")
    recompressed = io.BytesIO()
    small_photo("rocket").save(recompressed, "JPEG", quality=60)
    (folder / "rocket-q60.jpg").write_bytes(recompressed.getvalue())
    shutil.copyfile(folder / "rocket.jpg", folder / "rocket-copy.jpg")
    expected = {
        frozenset({"astronaut.jpg", "astronaut-edited.jpg"}),
        frozenset({"coffee.jpg", "coffee-small.png"}),
        frozenset({"rocket.jpg", "rocket-q60.jpg", "rocket-copy.jpg"}),
    }
    return folder, expected


def _groups(document):
    return {frozenset(path.rsplit("/", 1)[-1] for path in group["paths"]) for group in document["groups"]}


def test_dedup_of_a_folder_finds_the_planted_duplicates_only(folder_with_duplicates):
    folder, expected = folder_with_duplicates
    result, document = run_json("dedup", folder, "--model", "classic", "--format", "json")
    assert result.returncode == 1  # the bad files were skipped, and said so on stderr
    assert result.stderr.count('"reason"') == 3
    assert document["threshold"] == 0.98  # the classic model's documented default
    assert document["images"] == len(PHOTOS) + 4
    assert _groups(document) == expected


def test_dedup_of_an_index_matches_the_folder(folder_with_duplicates, tmp_path):
    folder, expected = folder_with_duplicates
    index_path = tmp_path / "dedup.fri"
    assert run_cli("index", folder, "-o", index_path, "--model", "classic").returncode == 1
    result, document = run_json("dedup", index_path, "--format", "json")  # the index's model
    assert result.returncode == 0
    assert _groups(document) == expected
    table = run_cli("dedup", index_path)
    assert table.stdout.splitlines()[0].split() == ["group", "size", "path", "similarity"]
    assert len(table.stdout.splitlines()) == 1 + 7
    assert "3 groups, 4 duplicates" in table.stderr
    strict = run_json("dedup", index_path, "--threshold", "1.01", "--format", "json")[1]
    assert strict["groups"] == []


def test_dedup_with_the_default_cnn_uses_its_own_measured_threshold(folder_with_duplicates, tmp_path):
    # The CNN's threshold (0.97) catches exact and lightly re-compressed copies; the
    # classic model's stricter copy detection is what the tests above cover.
    folder, _ = folder_with_duplicates
    subset = tmp_path / "subset"
    subset.mkdir()
    for name in ("astronaut.jpg", "astronaut-edited.jpg", "rocket.jpg", "rocket-copy.jpg", "coffee.jpg", "clock.jpg"):
        shutil.copyfile(folder / name, subset / name)
    result, document = run_json("dedup", subset, "--format", "json")
    assert result.returncode == 0 and document["threshold"] == 0.97
    assert _groups(document) == {frozenset({"astronaut.jpg", "astronaut-edited.jpg"}),
                                 frozenset({"rocket.jpg", "rocket-copy.jpg"})}


def test_dedup_needs_a_threshold_for_other_models(tmp_path):
    folder = tmp_path / "photos"
    write_photos(folder, PHOTOS[:2])
    model = tmp_path / "mean_colour.onnx"
    mean_colour_model(model)
    result = run_cli("dedup", folder, "--model", model)
    assert result.returncode == 2 and "--threshold" in result.stderr
    assert run_cli("dedup", folder, "--model", model, "--threshold", "0.9").returncode == 0


def test_evaluate_gives_the_metrics_computed_by_hand(tmp_path):
    # Classes: each photo with an edited copy, and a one-image "decoy" class holding a
    # byte-identical copy of astronaut.png. Edited copies score about 0.998 with their
    # original, distinct photos below 0.98, the identical copy exactly what the original
    # scores; equal scores rank by folder order (astronaut/ before decoy/).
    for name in ("astronaut", "coffee"):
        (tmp_path / name).mkdir()
        small_photo(name).save(tmp_path / name / f"{name}.png")
        (tmp_path / name / f"{name}-edited.jpg").write_bytes(edited(small_photo(name)))
    (tmp_path / "decoy").mkdir()
    shutil.copyfile(tmp_path / "astronaut" / "astronaut.png", tmp_path / "decoy" / "astronaut.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "stray.png")  # not in a class folder: ignored

    _, report = run_json("evaluate", tmp_path, "-k", "5", "--format", "json")
    # Queries (the decoy has no relevant image and is not one):
    #   astronaut.png:        decoy (irrelevant), astronaut-edited (relevant at rank 2)
    #                         -> AP@5 = P@2 / min(R=1, 5) = 1/2, recall@1 = 0, recall@5 = 1
    #   astronaut-edited.jpg: astronaut.png (relevant, before the equal decoy) -> AP 1, recall@1 1
    #   coffee.png, coffee-edited.jpg: each other first -> AP 1, recall@1 1
    #   precision@5 = 1 relevant / 5 for every query.
    overall = report["overall"]
    assert report["images"] == 5 and overall["queries"] == 4
    assert overall["map@5"] == pytest.approx((0.5 + 1 + 1 + 1) / 4)
    assert overall["recall@1"] == pytest.approx(3 / 4)
    assert overall["recall@5"] == overall["recall@10"] == 1.0
    assert overall["precision@5"] == pytest.approx(1 / 5)
    classes = {row["class"]: row for row in report["classes"]}
    assert classes["astronaut"]["map@5"] == pytest.approx(0.75)
    assert classes["astronaut"]["recall@1"] == pytest.approx(0.5)
    assert classes["coffee"]["map@5"] == classes["coffee"]["recall@1"] == 1.0
    assert classes["decoy"]["queries"] == 0 and classes["decoy"]["map@5"] is None

    table = run_cli("evaluate", tmp_path, "-k", "5")
    assert table.returncode == 0
    assert table.stdout.splitlines()[0].split() == [
        "class", "queries", "map@5", "recall@1", "recall@5", "recall@10", "precision@5"]
    assert table.stdout.splitlines()[-1].split()[:3] == ["all", "4", "0.8750"]


def test_evaluate_refuses_a_folder_without_classes(tmp_path):
    write_photos(tmp_path, PHOTOS[:2])  # images, but no class subfolders
    result = run_cli("evaluate", tmp_path)
    assert result.returncode == 2 and "class subfolders" in result.stderr
