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
