"""Images per second of ``fastretrieve index`` with the built-in model, end to end.

    python benchmarks/bench_cli_index.py [--images 2000] [--side 800] [--folder DIR]

Writes ``--images`` JPEG photos (quality 90, ``--side`` pixels on the longer side:
random crops, flips and brightness changes of scikit-image's bundled photos) into a
folder, then runs the real command line in a subprocess, as a user would:

    python -m fastretrieve index FOLDER -o FOLDER.fri --quiet --format json

and reports its own summary: the first run (everything embedded, including process
start-up, file hashing and the index save) and a second, incremental run (nothing
changed: nothing embedded).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from embed_fixtures import QUERY_PHOTOS, photo  # noqa: E402


def write_images(folder: Path, count: int, side: int) -> None:
    """``count`` varied JPEG photos of about ``side`` pixels in ``folder``."""
    generator = np.random.default_rng(0)
    sources = [photo(name) for name in QUERY_PHOTOS]
    for number in range(count):
        image = sources[number % len(sources)]
        width, height = image.size
        fraction = generator.uniform(0.6, 1.0)
        crop_w, crop_h = int(width * fraction), int(height * fraction)
        x, y = generator.integers(0, width - crop_w + 1), generator.integers(0, height - crop_h + 1)
        variant = image.crop((int(x), int(y), int(x) + crop_w, int(y) + crop_h))
        if generator.random() < 0.5:
            variant = variant.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        variant = ImageEnhance.Brightness(variant).enhance(generator.uniform(0.8, 1.2))
        scale = side / max(variant.size)
        variant = variant.resize((round(variant.width * scale), round(variant.height * scale)),
                                 Image.Resampling.BILINEAR)
        variant.save(folder / f"img{number:05d}.jpg", "JPEG", quality=90)


def run_index(folder: Path, index_path: Path) -> tuple[dict, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1] / "src"),
                                                      env.get("PYTHONPATH")]))
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "fastretrieve", "index", str(folder), "-o", str(index_path),
         "--quiet", "--format", "json"],
        capture_output=True, text=True, env=env, check=True,
    )
    return json.loads(result.stdout), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--side", type=int, default=800)
    parser.add_argument("--folder", help="where to write the images (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fastretrieve-bench-") as scratch:
        folder = Path(args.folder or scratch) / "images"
        folder.mkdir(parents=True, exist_ok=True)
        write_images(folder, args.images, args.side)
        megabytes = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
        print(f"{args.images} JPEGs, {args.side} px on the longer side, {megabytes:.0f} MB; "
              f"{os.cpu_count()} CPUs")
        index_path = folder.parent / "images.fri"
        index_path.unlink(missing_ok=True)
        for label in ("first run (embeds everything)", "second run (nothing changed)"):
            summary, wall = run_index(folder, index_path)
            print(f"{label}: {summary['embedded']} embedded in {summary['seconds']:.2f} s "
                  f"({summary['images_per_second']:.1f} images/s as the command reports it); "
                  f"process wall time {wall:.2f} s, {args.images / wall:.1f} images/s overall")


if __name__ == "__main__":
    main()
