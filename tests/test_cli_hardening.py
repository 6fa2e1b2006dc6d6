"""The command line on real disks and untrusted inputs: the errors report never destroys a
file, odd folders (unreadable, symlink loops, links leaving the tree) never stop a run."""

from __future__ import annotations

import json

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
