"""Write the "views" labelled folder of bench_retrieval_head.py to disk, for
``fastretrieve evaluate`` (one subfolder per class; the LFW non-face patches are
one-image classes, i.e. distractors):

    PYTHONPATH=tests python benchmarks/make_labelled_folder.py /tmp/views
    fastretrieve evaluate /tmp/views --whitening
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_retrieval_head import views_set  # noqa: E402


def main(folder: str) -> int:
    images, labels = views_set()
    for number, (image, label) in enumerate(zip(images, labels)):
        target = Path(folder) / f"class{label:04d}"
        target.mkdir(parents=True, exist_ok=True)
        image.convert("RGB").save(target / f"{number:04d}.jpg", "JPEG", quality=90)
    print(f"wrote {len(images)} images in {len(set(labels.tolist()))} classes to {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
