"""The command line on real disks and untrusted inputs: the errors report never destroys a
file, odd folders (unreadable, symlink loops, links leaving the tree) never stop a run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli_fixtures import BAD_FILES, PHOTOS, run_cli, run_json, write_bad_files, write_photos


def read_report(path):
    with open(path, encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


# -- --errors PATH ------------------------------------------------------------------------------


def test_errors_path_naming_another_file_is_refused_and_left_alone(tmp_path):
    folder = tmp_path / "photos"
    write_photos(folder, PHOTOS[:2])
    precious = tmp_path / "notes.txt"
    precious.write_text("my notes, not a report\n")
    result = run_cli("index", folder, "-o", tmp_path / "p.fri", "--errors", precious)
    assert result.returncode == 2 and "not a report of skipped files" in result.stderr
    assert precious.read_text() == "my notes, not a report\n"
    assert not (tmp_path / "p.fri").exists()


def test_errors_report_is_written_whole_and_an_earlier_one_replaced(tmp_path):
    folder = tmp_path / "photos"
    write_photos(folder, PHOTOS[:2])
    write_bad_files(folder)
    report = tmp_path / "skipped.jsonl"
    index_path = tmp_path / "p.fri"
    result, summary = run_json("index", folder, "-o", index_path, "--errors", report,
                               "--format", "json")
    assert result.returncode == 1 and summary["errors_file"] == str(report)
    assert sorted(entry["path"].rsplit("/", 1)[1] for entry in read_report(report)) == sorted(BAD_FILES)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    for name in BAD_FILES:
        (folder / name).unlink()
    result, summary = run_json("index", folder, "-o", index_path, "--errors", report,
                               "--format", "json")
    # The earlier report is replaced by this run's, empty: never left stale, never deleted.
    assert result.returncode == 0 and summary["skipped"] == 0
    assert report.read_text() == ""


# -- one read per file, hashed where it is decoded -------------------------------------------------


def test_indexing_reads_each_file_once_and_hashes_it_in_the_decode_threads(tmp_path, monkeypatch):
    import builtins
    import hashlib
    import os
    import threading

    from fastretrieve import Index
    from fastretrieve.cli.indexing import update_index

    folder = tmp_path / "photos"
    paths = write_photos(folder, PHOTOS[:4])
    opened, hashing_threads = [], set()
    real_open, real_os_open, real_sha256 = builtins.open, os.open, hashlib.sha256

    def counting_open(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.fspath(file).startswith(str(folder)):
            opened.append(os.fspath(file))
        return real_open(file, *args, **kwargs)

    def counting_os_open(path, *args, **kwargs):
        if os.fspath(path).startswith(str(folder)):
            opened.append(os.fspath(path))
        return real_os_open(path, *args, **kwargs)

    def recording_sha256(data=b"", **kwargs):
        if len(data) > 1000:  # image bytes, not the small strings hashed elsewhere
            hashing_threads.add(threading.current_thread().name)
        return real_sha256(data, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(os, "open", counting_os_open)
    monkeypatch.setattr(hashlib, "sha256", recording_sha256)
    summary = update_index([folder], tmp_path / "p.fri", show_progress=False,
                           embedder_options={"batch_size": 2})
    assert summary.embedded == 4
    assert sorted(opened) == sorted(map(str, paths))  # each file opened exactly once
    assert hashing_threads and all(name.startswith("fastretrieve-decode") for name in hashing_threads)
    index = Index.load(tmp_path / "p.fri")
    for meta in index.get_metadata(index.ids.tolist()):
        with real_open(meta["path"], "rb") as file:
            assert meta["sha256"] == real_sha256(file.read()).hexdigest()


# -- folders as they are on real disks -------------------------------------------------------


def odd_folder(tmp_path):
    """Photos in a folder and a subfolder, a link back to the folder itself (a loop), a
    link to a folder outside it, and a link to its own subfolder."""
    folder = tmp_path / "photos"
    write_photos(folder, PHOTOS[:2])
    write_photos(folder / "sub", PHOTOS[2:3])
    write_photos(tmp_path / "elsewhere", PHOTOS[3:4])
    (folder / "loop").symlink_to(".")
    (folder / "outside").symlink_to(tmp_path / "elsewhere")
    return folder


def reasons_by_name(report):
    return {entry["path"].rsplit("/", 1)[1]: entry["reason"] for entry in report}


def test_index_skips_links_to_folders_unless_told_and_reports_each(tmp_path):
    folder = odd_folder(tmp_path)
    report = tmp_path / "skipped.jsonl"
    result, summary = run_json("index", folder, "-o", tmp_path / "p.fri", "-r",
                               "--errors", report, "--format", "json")
    assert result.returncode == 1 and summary["embedded"] == 3  # the folder and sub/
    reasons = reasons_by_name(read_report(report))
    assert set(reasons) == {"loop", "outside"}
    assert all("not followed (pass --follow-links" in reason for reason in reasons.values())


def test_follow_links_detects_loops_and_reports_links_leaving_the_tree(tmp_path):
    folder = odd_folder(tmp_path)
    (folder / "sub" / "up").symlink_to("..")
    report = tmp_path / "skipped.jsonl"
    result, summary = run_json("index", folder, "-o", tmp_path / "p.fri", "-r",
                               "--follow-links", "--errors", report, "--format", "json")
    assert result.returncode == 1 and summary["embedded"] == 3  # elsewhere/ is not walked
    reasons = reasons_by_name(read_report(report))
    assert set(reasons) == {"loop", "up", "outside"}
    assert reasons["loop"].startswith("symlink loop: leads back to")
    assert reasons["up"].startswith("symlink loop: leads back to")
    assert "leads out of" in reasons["outside"]


def test_an_unlistable_subfolder_is_skipped_with_its_reason(tmp_path, monkeypatch):
    import os

    from fastretrieve.cli.errors import SkipReport
    from fastretrieve.cli.files import find_images

    folder = tmp_path / "photos"
    paths = write_photos(folder, PHOTOS[:2])
    write_photos(folder / "lost+found", PHOTOS[2:3])
    real_scandir = os.scandir

    def root_only(path="."):  # what a user meets on a root-only lost+found (tests run as root)
        if os.fspath(path).endswith("lost+found"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", root_only)
    report = tmp_path / "skipped.jsonl"
    skips = SkipReport(report)
    assert find_images([folder], recursive=True, skips=skips) == sorted(map(str, paths))
    skips.save()
    assert read_report(report) == [
        {"path": str(folder / "lost+found"), "reason": "cannot list the folder (Permission denied)"}
    ]


def test_dedup_and_evaluate_go_on_past_a_symlink_loop(tmp_path):
    folder = tmp_path / "labelled"
    write_photos(folder / "a", PHOTOS[:2])
    write_photos(folder / "b", PHOTOS[2:4])
    (folder / "a" / "loop").symlink_to(".")
    (folder / "c").symlink_to(".")
    result = run_cli("dedup", folder, "-r", "--follow-links", "--format", "json")
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["images"] == 4 and "symlink loop" in result.stderr
    result = run_cli("evaluate", folder, "--follow-links", "--format", "json")
    assert result.returncode == 1, result.stderr
    assert json.loads(result.stdout)["images"] == 4
    assert result.stderr.count("symlink loop") == 2  # a/loop and the class link c


# -- an index file never decides which model is fetched or run -----------------------------------


def _index_naming_model(tmp_path, model_name):
    """A real index (classic vectors) whose model record names ``model_name``."""
    from fastretrieve import Index

    folder = tmp_path / "photos"
    write_photos(folder, PHOTOS[:2])
    index_path = tmp_path / "p.fri"
    assert run_cli("index", folder, "-o", index_path).returncode == 0
    index = Index.load(index_path, mmap=False)
    record = index.attributes["embedder"]
    index.attributes = {"embedder": {**record, "model": model_name}}
    index.save(index_path)
    return index_path, folder / f"{PHOTOS[0]}.jpg"


def test_a_model_url_inside_an_index_is_never_fetched(tmp_path):
    import http.server
    import threading

    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            self.send_error(404)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/evil.onnx"
        index_path, query = _index_naming_model(tmp_path, url)
        for command in (["search", index_path, query], ["index", query.parent, "-o", index_path]):
            result = run_cli(*command)
            assert result.returncode == 3 and "never decides" in result.stderr, result.stderr
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
    assert requests == []


def test_a_model_url_given_by_the_user_is_pinned_to_the_recorded_sha256(monkeypatch):
    from fastretrieve.cli import image_index
    from fastretrieve.cli.errors import CommandError

    calls = []

    class RecordingEmbedder:
        fingerprint = "f" * 64

        def __init__(self, spec, *, sha256=None, **options):
            calls.append((spec, sha256))

    monkeypatch.setattr(image_index, "Embedder", RecordingEmbedder)
    pin = "ab" * 32
    record = {"model": "https://example.org/m.onnx", "fingerprint": "f" * 64,
              "settings": {"model_sha256": pin}}
    image_index.open_embedder(record, "p.fri", "https://example.org/m.onnx")
    image_index.open_embedder({**record, "model": "classic"}, "p.fri")
    assert calls == [("https://example.org/m.onnx", pin), ("classic", None)]
    with pytest.raises(CommandError, match="records no sha256"):
        image_index.open_embedder({**record, "settings": {}}, "p.fri", "https://example.org/m.onnx")


# -- int8: the command line fits on a broad sample, not one batch ----------------------------------


def test_a_new_int8_index_is_fitted_on_more_than_one_batch(tmp_path):
    from fastretrieve import Embedder, Index
    from fastretrieve.cli.indexing import update_index

    folder = tmp_path / "photos"
    paths = write_photos(folder, PHOTOS[:6])
    with pytest.warns(UserWarning, match="fitted on 6 vector"):  # all six, not the first 2
        update_index([folder], tmp_path / "p.fri", dtype="int8", show_progress=False,
                     embedder_options={"batch_size": 2})
    index = Index.load(tmp_path / "p.fri")
    order = np.argsort([meta["path"] for meta in index.get_metadata(index.ids.tolist())])
    stored = index.get(index.ids)[order]
    exact = Embedder().embed(sorted(map(str, paths)))
    step = index._snapshot.codec.step
    assert (np.abs(stored - exact) <= step / 2 + 1e-6).all()  # rounded, never clipped


# -- dedup memory -------------------------------------------------------------------------------


def test_dedup_of_an_index_makes_no_copy_of_its_vectors(tmp_path, monkeypatch, capsys):
    import tracemalloc
    import warnings

    from fastretrieve import Index
    from fastretrieve.cli import dedup, main

    rows, dim = 20_000, 512
    vectors = np.random.default_rng(0).standard_normal((rows, dim)).astype(np.float32)
    vectors[1] = vectors[0]  # one duplicate pair
    index = Index(dim, metric="cosine")
    index.add(vectors, metadata=[{"path": f"{i}.jpg"} for i in range(rows)])
    index.attributes = {"embedder": {"model": "m.onnx", "fingerprint": "0" * 64}}
    index.save(tmp_path / "p.fri")
    del index, vectors
    monkeypatch.setattr(dedup, "QUERY_BLOCK_ROWS", 512, raising=False)
    monkeypatch.setattr(warnings, "showwarning", warnings.showwarning)  # main() replaces it
    tracemalloc.start()
    try:
        code = main(["dedup", str(tmp_path / "p.fri"), "--threshold", "0.999", "--format", "json", "-q"])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 0
    assert json.loads(capsys.readouterr().out)["groups"][0]["paths"] == ["0.jpg", "1.jpg"]
    float32_size = rows * dim * 4  # 41 MB; the index is memory-mapped, not copied
    assert peak < 0.4 * float32_size, f"{peak / 1e6:.1f} MB allocated"
