"""An indexing run killed (SIGKILL) or interrupted (Ctrl-C) midway leaves a loadable index,
and the next run completes it without embedding again what was saved.

The run is slowed by the test-only hook FASTRETRIEVE_TEST_BATCH_DELAY (a sleep after each
batch, see fastretrieve.cli.indexing), so the signal lands midway on any machine.
"""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from cli_fixtures import PHOTOS, cli_command, cli_env, run_json, write_photos
from fastretrieve import Index

BATCH = 2
BATCH_DELAY_SECONDS = 0.4


@pytest.mark.parametrize("stop_signal", [signal.SIGKILL, signal.SIGINT], ids=["kill", "ctrl-c"])
def test_interrupted_index_loads_and_resumes(tmp_path, stop_signal):
    folder = tmp_path / "photos"
    write_photos(folder, PHOTOS)
    index_path = tmp_path / "photos.fri"
    command = cli_command("index", folder, "-o", index_path, "--batch-size", BATCH,
                          "--checkpoint-every", 0, "--quiet")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=cli_env(FASTRETRIEVE_TEST_BATCH_DELAY=str(BATCH_DELAY_SECONDS)))
    deadline = time.monotonic() + 60
    while not index_path.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.02)  # the first checkpoint: one batch saved
    assert process.poll() is None, "the run ended before it could be interrupted"
    process.send_signal(stop_signal)
    _, stderr = process.communicate(timeout=60)
    if stop_signal == signal.SIGINT:
        assert process.returncode == 130 and b"interrupted" in stderr
    else:
        assert process.returncode == -signal.SIGKILL

    saved = len(Index.load(index_path))  # whatever the moment of the kill, it loads
    assert BATCH <= saved < len(PHOTOS)
    _, summary = run_json("index", folder, "-o", index_path, "--format", "json")
    assert summary["unchanged"] == saved
    assert summary["embedded"] == len(PHOTOS) - saved
    assert len(Index.load(index_path)) == len(PHOTOS)
