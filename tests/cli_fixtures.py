"""Helpers for the command-line tests: run ``python -m fastretrieve`` for real, make photo folders.

The CLI runs as a subprocess of the interpreter running the tests, importing the same
fastretrieve package the tests import (its parent folder is put on PYTHONPATH), so the
tests check a source checkout and an installed package alike.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

import fastretrieve
from embed_fixtures import photo

# Distinct photos: no two of them reach the classic model's dedup threshold.
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "clock", "brick",
          "immunohistochemistry", "hubble_deep_field")
PHOTO_SIDE = 256  # small photos keep the tests fast
BAD_FILES = ("empty.jpg", "truncated.jpg", "random.jpg")


def cli_env(**extra: str) -> dict:
    """The environment of a CLI subprocess: this fastretrieve first on the path."""
    package_parent = str(Path(fastretrieve.__file__).resolve().parents[1])
    env = dict(os.environ, **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    return env


def cli_command(*args) -> list[str]:
    """The argument list running ``fastretrieve ARGS...``."""
    return [sys.executable, "-m", "fastretrieve", *(os.fspath(a) if isinstance(a, os.PathLike) else str(a) for a in args)]


def run_cli(*args, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """Run ``fastretrieve ARGS...`` and capture its output (text)."""
    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout,
                          env=cli_env(**env))


def run_json(*args, **env: str):
    """Run a command with ``--format json`` output and parse it; returns (result, data)."""
    result = run_cli(*args, **env)
    assert result.returncode in (0, 1), result.stderr
    return result, json.loads(result.stdout)


def small_photo(name: str) -> Image.Image:
    """A bundled scikit-image photo, at most PHOTO_SIDE pixels on its longer side."""
    image = photo(name)
    image.thumbnail((PHOTO_SIDE, PHOTO_SIDE), Image.Resampling.BILINEAR)
    return image


def edited(image: Image.Image) -> bytes:
    """An edited copy as JPEG bytes: 10 % brighter, re-compressed at quality 80."""
    buffer = io.BytesIO()
    ImageEnhance.Brightness(image).enhance(1.1).save(buffer, "JPEG", quality=80)
    return buffer.getvalue()


def write_photos(folder: Path, names=PHOTOS) -> list[Path]:
    """Save the named photos as ``NAME.jpg`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        path = folder / f"{name}.jpg"
        small_photo(name).save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def write_bad_files(folder: Path) -> None:
    """The files an embedder must skip (BAD_FILES) and a folder named like an image."""
    (folder / "empty.jpg").write_bytes(b"")
    whole = io.BytesIO()
    small_photo("coffee").save(whole, "JPEG", quality=90)
    (folder / "truncated.jpg").write_bytes(whole.getvalue()[: len(whole.getvalue()) // 3])
    (folder / "random.jpg").write_bytes(np.random.default_rng(0).bytes(4096))
    (folder / "x.jpg").mkdir()
