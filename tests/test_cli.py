"""The command line end to end: real subprocesses, real photo files, real index files."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from cli_fixtures import (
    BAD_FILES, PHOTOS, cli_command, cli_env, edited, run_cli, run_json, small_photo,
    write_bad_files, write_photos,
)
from embed_fixtures import mean_colour_model
from index_file_fixtures import rebuilt, sections_of
from fastretrieve import Index
from fastretrieve.cli import contact_sheet

COMMANDS = ("index", "search", "dedup", "info", "evaluate", "fit-whitening", "demo", "doctor", "bench")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A folder of photos and bad files, indexed once: (folder, index path, first run)."""
    folder = tmp_path_factory.mktemp("photos")
    write_photos(folder)
    write_bad_files(folder)
    index_path = folder.parent / "photos.fri"
    result, summary = run_json("index", folder, "-o", index_path, "--format", "json")
    return folder, index_path, result, summary


def test_help_of_every_command_has_examples():
    result = run_cli("--help")
    assert result.returncode == 0 and "examples:" in result.stdout
    for command in COMMANDS:
        result = run_cli(command, "--help")
        assert result.returncode == 0, command
        assert "examples:" in result.stdout, command


def test_usage_errors_exit_with_2():
    assert run_cli().returncode == 2
    assert run_cli("search").returncode == 2  # missing arguments
    assert run_cli("no-such-command").returncode == 2
    result = run_cli("bench", "--rows", "3", "-k", "5")  # parses, but makes no sense
    assert result.returncode == 2 and "exceeds" in result.stderr


def test_failure_is_one_line_and_traceback_only_with_debug(tmp_path):
    missing = tmp_path / "missing.fri"
    result = run_cli("info", missing)
    assert result.returncode == 3
    assert result.stderr.strip().count("\n") == 0
    assert "no such index" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "corrupt.fri").write_bytes(b"not an index at all")
    result = run_cli("info", tmp_path / "corrupt.fri", "--debug")
    assert result.returncode == 3
    assert "Traceback" in result.stderr and "fastretrieve: error:" in result.stderr


def test_index_skips_bad_files_and_reports_them(indexed):
    folder, index_path, result, summary = indexed
    assert result.returncode == 1  # partial: some files were skipped
    assert summary["embedded"] == len(PHOTOS)
    assert summary["skipped"] == len(BAD_FILES)
    assert "\r" not in result.stderr  # no progress bar when stderr is not a terminal
    with open(summary["errors_file"], encoding="utf-8") as lines:
        report = [json.loads(line) for line in lines]
    assert sorted(os.path.basename(entry["path"]) for entry in report) == sorted(BAD_FILES)
    assert all(entry["reason"] for entry in report)
    index = Index.load(index_path)
    names = sorted(os.path.basename(meta["path"]) for meta in index.get_metadata(index.ids.tolist()))
    assert names == sorted(f"{name}.jpg" for name in PHOTOS)  # and not the folder x.jpg


def test_the_model_record_is_inside_the_index_file_and_no_sidecar_is_written(indexed):
    _, index_path, _, _ = indexed
    record = Index.load(index_path).attributes["embedder"]
    assert record["model"] == "efficientnet-lite0" and len(record["fingerprint"]) == 64  # the default
    assert record["settings"]["preprocessing"]["image_size"]
    written = sorted(path.name for path in index_path.parent.iterdir()
                     if path.name.startswith(index_path.name))
    assert written == ["photos.fri", "photos.fri.errors.jsonl"]  # the index and its skip report


def test_info_describes_the_index(indexed):
    _, index_path, _, _ = indexed
    _, details = run_json("info", index_path, "--format", "json")
    assert details["count"] == len(PHOTOS)
    assert (details["dim"], details["metric"], details["dtype"]) == (1280, "cosine", "float32")
    assert details["model"] == "efficientnet-lite0"
    assert details["size_bytes"] == index_path.stat().st_size > len(PHOTOS) * 1280 * 4
    table = run_cli("info", index_path)
    assert table.returncode == 0 and "size on disk" in table.stdout


def test_search_ranks_the_original_first_in_every_format(indexed, tmp_path):
    folder, index_path, _, _ = indexed
    query = tmp_path / "query.jpg"
    query.write_bytes(edited(small_photo("chelsea")))
    _, answers = run_json("search", index_path, query, "-k", "3", "--format", "json")
    results = answers[0]["results"]
    assert answers[0]["query"] == str(query)
    assert [r["rank"] for r in results] == [1, 2, 3]
    assert results[0]["path"] == str(folder / "chelsea.jpg")
    assert results[0]["score"] > 0.98 and results[0]["score"] >= results[1]["score"] >= results[2]["score"]

    rows = list(csv.DictReader(io.StringIO(run_cli("search", index_path, query, "-k", "3", "--format", "csv").stdout)))
    assert [row["path"] for row in rows] == [r["path"] for r in results]
    table = run_cli("search", index_path, query, "-k", "3")
    assert table.returncode == 0 and table.stdout.splitlines()[1].split()[-1] == str(folder / "chelsea.jpg")


def test_search_decodes_the_metadata_of_its_results_only(indexed, tmp_path):
    folder, index_path, _, _ = indexed
    index = Index.load(index_path, mmap=False)
    paths = [meta["path"] for meta in index.get_metadata(index.ids)]
    answer_row = paths.index(str(folder / "chelsea.jpg"))
    # Every other entry's stored metadata is made undecodable (checksums redone): a
    # search that decoded them all, as loading did, would fail.
    _, sections = sections_of(index_path.read_bytes())
    offsets = np.frombuffer(sections["item_offsets"], "<u8").astype(np.int64)
    items = [b'{"path":"x","path":"y"}'] * len(paths)
    items[answer_row] = sections["items"][offsets[answer_row]:offsets[answer_row + 1]]
    new_offsets = np.zeros(len(items) + 1, "<u8")
    np.cumsum([len(item) for item in items], out=new_offsets[1:])
    damaged = tmp_path / "damaged.fri"
    damaged.write_bytes(rebuilt(index_path.read_bytes(), items=b"".join(items),
                                item_offsets=new_offsets.tobytes()))
    query = tmp_path / "query.jpg"
    query.write_bytes(edited(small_photo("chelsea")))
    _, answers = run_json("search", damaged, query, "-k", "1", "--format", "json")
    assert [r["path"] for r in answers[0]["results"]] == [str(folder / "chelsea.jpg")]
    refused = run_cli("search", damaged, query, "-k", "2")
    assert refused.returncode == 3 and "duplicate key 'path'" in refused.stderr


def test_search_reports_unreadable_queries_and_exits_1(indexed, tmp_path):
    _, index_path, _, _ = indexed
    good, bad = tmp_path / "good.jpg", tmp_path / "bad.jpg"
    good.write_bytes(edited(small_photo("rocket")))
    bad.write_bytes(b"")
    result = run_cli("search", index_path, good, bad, "-k", "1", "--format", "json")
    assert result.returncode == 1
    assert json.loads(result.stderr.splitlines()[0])["path"] == str(bad)
    assert [answer["query"] for answer in json.loads(result.stdout)] == [str(good)]
    assert run_cli("search", index_path, bad).returncode == 3  # nothing could be searched


def test_search_refuses_another_model(indexed, tmp_path):
    _, index_path, _, _ = indexed
    other_model = tmp_path / "mean_colour.onnx"
    mean_colour_model(other_model)
    query = tmp_path / "query.jpg"
    query.write_bytes(edited(small_photo("coffee")))
    result = run_cli("search", index_path, query, "--model", other_model)
    assert result.returncode == 3
    assert "was built with model 'efficientnet-lite0'" in result.stderr and "cannot be compared" in result.stderr


def test_a_copied_index_file_searches_with_its_model_named_on_the_command_line(tmp_path):
    folder = tmp_path / "photos"
    write_photos(folder, PHOTOS[:4])
    model = tmp_path / "mean_colour.onnx"
    mean_colour_model(model)
    built = tmp_path / "built" / "photos.fri"
    assert run_cli("index", folder, "-o", built, "--model", model).returncode == 0
    copied = tmp_path / "elsewhere" / "copy.fri"
    copied.parent.mkdir()
    shutil.copyfile(built, copied)  # the file alone, nothing next to it
    shutil.rmtree(built.parent)

    _, details = run_json("info", copied, "--format", "json")
    assert (details["model"], details["dim"], details["count"]) == (str(model), 3, 4)
    query = tmp_path / "query.jpg"
    query.write_bytes(edited(small_photo("coffee")))
    # The index names a model file: it is used only when the user names it too.
    refused = run_cli("search", copied, query)
    assert refused.returncode == 3 and "never decides which model file is fetched or run" in refused.stderr
    _, answers = run_json("search", copied, query, "-k", "4", "--model", model, "--format", "json")
    found = {result["path"] for result in answers[0]["results"]}
    assert found == {str(folder / f"{name}.jpg") for name in PHOTOS[:4]}
    refused = run_cli("search", copied, query, "--model", "classic")
    assert refused.returncode == 3 and f"was built with model '{model}'" in refused.stderr


def test_an_index_without_a_model_record_is_refused_with_advice(tmp_path):
    index_path = tmp_path / "plain.fri"
    Index(576).save(index_path)  # made with the Python API: no "embedder" attribute
    query = tmp_path / "query.jpg"
    query.write_bytes(edited(small_photo("coffee")))
    result = run_cli("search", index_path, query)
    assert result.returncode == 3
    assert "has no model record" in result.stderr and "fastretrieve index" in result.stderr


def test_contact_sheet_shows_each_query_and_its_results(indexed, tmp_path):
    _, index_path, _, _ = indexed
    queries = []
    for name in ("astronaut", "coins"):  # square queries fill the thumbnail box exactly
        image = small_photo(name)
        side = min(image.size)
        path = tmp_path / f"{name}.png"
        image.crop((0, 0, side, side)).save(path)
        queries.append(path)
    sheet_path = tmp_path / "sheet.png"
    thumb, k = 64, 3
    result = run_cli("search", index_path, *queries, "-k", k, "--grid", sheet_path, "--thumb-size", thumb)
    assert result.returncode == 0, result.stderr
    assert f"contact sheet: {sheet_path}" in result.stderr
    cell_width, cell_height = contact_sheet.cell_size(thumb)
    with Image.open(sheet_path) as sheet:
        assert sheet.format == "PNG"
        assert sheet.size == ((k + 1) * cell_width, len(queries) * cell_height)
        pixels = np.asarray(sheet.convert("RGB"), np.float32)
    for row, query in enumerate(queries):
        with Image.open(query) as image:
            expected = image.convert("RGB")
        expected.thumbnail((thumb, thumb), Image.Resampling.BICUBIC)
        top, left = row * cell_height + contact_sheet.MARGIN, contact_sheet.MARGIN
        first_cell = pixels[top:top + thumb, left:left + thumb]
        assert np.abs(first_cell - np.asarray(expected, np.float32)).mean() < 2.0
        with Image.open(queries[1 - row]) as image:
            other_query = image.convert("RGB").resize((thumb, thumb))
        assert np.abs(first_cell - np.asarray(other_query, np.float32)).mean() > 20


def test_reindex_embeds_only_new_and_changed_files(tmp_path):
    folder = tmp_path / "photos"
    write_photos(folder, PHOTOS[:6])
    index_path = tmp_path / "photos.fri"
    _, first = run_json("index", folder, "-o", index_path, "--format", "json")
    assert (first["new"], first["embedded"], first["images"]) == (6, 6, 6)

    write_photos(folder, ["moon"])  # new
    shutil.copyfile(folder / "rocket.jpg", folder / "chelsea.jpg")  # changed content
    os.utime(folder / "coffee.jpg", ns=(1, 1))  # touched only: same content, another mtime
    (folder / "camera.jpg").unlink()  # deleted
    result, second = run_json("index", folder, "-o", index_path, "--format", "json")
    assert result.returncode == 0
    assert second["embedded"] == 2  # moon and chelsea; nothing else was re-embedded
    assert (second["new"], second["changed"], second["removed"]) == (1, 1, 1)
    assert (second["unchanged"], second["refreshed"], second["images"]) == (4, 1, 6)

    index = Index.load(index_path)
    by_path = {meta["path"]: meta for meta in index.get_metadata(index.ids.tolist())}
    assert str(folder / "camera.jpg") not in by_path
    assert by_path[str(folder / "coffee.jpg")]["mtime_ns"] == 1
    query = tmp_path / "rocket-query.jpg"
    query.write_bytes(edited(small_photo("rocket")))
    _, answers = run_json("search", index_path, query, "-k", "2", "--format", "json")
    assert {r["path"] for r in answers[0]["results"]} == {str(folder / "rocket.jpg"), str(folder / "chelsea.jpg")}

    saved = index_path.stat().st_mtime_ns
    _, third = run_json("index", folder, "-o", index_path, "--format", "json")
    assert (third["embedded"], third["unchanged"], third["images"]) == (0, 6, 6)
    assert index_path.stat().st_mtime_ns == saved  # nothing changed: the file is not rewritten


def test_an_empty_folder_gives_an_empty_index(tmp_path):
    (tmp_path / "empty").mkdir()
    index_path = tmp_path / "out" / "empty.fri"  # missing parent folders are created
    assert run_cli("index", tmp_path / "empty", "-o", index_path).returncode == 0
    assert run_json("info", index_path, "--format", "json")[1]["count"] == 0


def test_index_refuses_to_switch_model(tmp_path):
    folder = tmp_path / "photos"
    write_photos(folder, PHOTOS[:2])
    index_path = tmp_path / "photos.fri"
    assert run_cli("index", folder, "-o", index_path).returncode == 0
    other_model = tmp_path / "mean_colour.onnx"
    mean_colour_model(other_model)
    result = run_cli("index", folder, "-o", index_path, "--model", other_model)
    assert result.returncode == 3 and "cannot be compared" in result.stderr
    assert len(Index.load(index_path)) == 2


def test_progress_bar_on_a_terminal_and_not_with_quiet(tmp_path):
    folder = tmp_path / "photos"
    write_photos(folder, PHOTOS[:3])
    outputs = {}
    for quiet in (False, True):
        controller, terminal = pty.openpty()
        extra = ["--quiet"] if quiet else []
        command = cli_command("index", folder, "-o", tmp_path / f"{quiet}.fri", *extra)
        process = subprocess.run(command, stdout=subprocess.PIPE, stderr=terminal, env=cli_env(), timeout=120)
        os.close(terminal)
        assert process.returncode == 0
        outputs[quiet] = _read_all(controller)
        os.close(controller)
    assert "images/s" in outputs[False] and "ETA" in outputs[False] and "3/3" in outputs[False]
    assert outputs[True] == ""


def _read_all(controller) -> str:
    """What a pseudo-terminal received; Linux signals its end with EIO once it is drained."""
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_demo_runs_on_the_bundled_samples(tmp_path):
    result = run_cli("demo", "--output-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "is found first" in result.stdout
    # The portrait that is not in the index finds the samples' portraits first (the
    # astronaut, then the cameraman), not the photos whose colours it shares.
    semantic = result.stdout.split("(not in the index: a portrait)")[1].splitlines()
    assert [line.split()[-1].rsplit("/", 1)[-1] for line in semantic[2:4]] == ["astronaut.jpg", "camera.jpg"]
    assert f"contact sheet: {tmp_path / 'contact-sheet.png'}" in result.stdout
    with Image.open(tmp_path / "contact-sheet.png") as sheet:
        assert sheet.format == "PNG" and sheet.height > sheet.width / 6  # two query rows
    assert len(Index.load(tmp_path / "samples.fri")) == 10


def test_doctor_reports_backend_onnxruntime_cuda_and_cache():
    _, report = run_json("doctor", "--format", "json")
    for key in ("backend", "simd", "cpu_features", "onnxruntime", "onnxruntime_providers",
                "cuda_libraries", "cache_dir"):
        assert key in report
    assert run_cli("doctor").returncode == 0


def test_bench_compares_with_numpy_and_faiss():
    _, report = run_json("bench", "--rows", "2000", "--dim", "16", "--queries", "4",
                         "--repeats", "1", "--format", "json")
    engines = [row["engine"] for row in report["results"]]
    assert engines[0].startswith("fastretrieve") and "numpy" in engines
    try:
        import faiss  # noqa: F401
    except ImportError:
        return
    assert "faiss (IndexFlat)" in engines
