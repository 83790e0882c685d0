"""One-time build of lib/rankdml/data/files/fashion28.npz: a fixed Fashion-MNIST subset (same classes in every split).

Run by the book's authors, never at run time:

    apt-get install -y dataset-fashion-mnist      # Debian package with the four official idx files
    python data/build_fashion.py

The subset is the first TRAIN_PER_CLASS images of each class in the official training file (file order)
followed by the first TEST_PER_CLASS images of each class in the official test file, so anyone with the
same files gets the same images. The zip is written with fixed dates (see build_emoji.write_npz), so
the SHA-256 printed at the end is reproducible; it goes into `FASHION_SHA256` in
lib/rankdml/data/embedded.py.

Arrays in the npz:
    images         uint8 (N, 28, 28, 1)   grey, white object on black as in the original
    labels         int64 (N,)             0..9, index into class_names
    class_names    <U (10,)               the official Fashion-MNIST class names
    official_split <U (N,)                "train" or "test": the official file the image comes from
"""
from __future__ import annotations

import gzip
import hashlib
import sys
from pathlib import Path

import numpy as np

from build_emoji import write_npz  # same byte-stable npz writer for both data files

HERE = Path(__file__).resolve().parent
#: Written into the package, which ships it (rankdml.data.embedded reads it with importlib.resources).
OUTPUT = HERE.parent / "lib" / "rankdml" / "data" / "files" / "fashion28.npz"
SOURCE = Path("/usr/share/datasets/fashion-mnist")
TRAIN_PER_CLASS, TEST_PER_CLASS = 600, 300
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def read_idx(path: Path) -> np.ndarray:
    """Decode a gzipped IDX file (big-endian dims after a 4-byte magic whose last byte is ndim)."""
    raw = gzip.decompress(path.read_bytes())
    if raw[:3] != b"\x00\x00\x08":  # 0x08 = unsigned byte data; the only type these files use
        raise ValueError(f"{path}: not a uint8 IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def first_per_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first `per_class` images of every class, returned in file order."""
    picked = [np.flatnonzero(labels == c)[:per_class] for c in range(len(CLASS_NAMES))]
    if any(len(p) < per_class for p in picked):
        raise ValueError(f"some class has fewer than {per_class} images")
    return np.sort(np.concatenate(picked))


def main() -> None:
    if not SOURCE.is_dir():
        raise SystemExit(f"{SOURCE} not found: run `apt-get install -y dataset-fashion-mnist` first")
    parts = []
    for prefix, per_class, origin in (("train", TRAIN_PER_CLASS, "train"), ("t10k", TEST_PER_CLASS, "test")):
        images = read_idx(SOURCE / f"{prefix}-images-idx3-ubyte.gz")
        labels = read_idx(SOURCE / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64)
        keep = first_per_class(labels, per_class)
        parts.append((images[keep], labels[keep], np.full(len(keep), origin)))
    images, labels, origin = (np.concatenate(a) for a in zip(*parts))
    write_npz(OUTPUT, {
        "images": images[..., None],  # (N, 28, 28, 1): channel-last like every array data set here
        "labels": labels,
        "class_names": np.asarray(CLASS_NAMES, dtype=str),
        "official_split": origin.astype(str),
    })
    print(f"{len(images)} images: {TRAIN_PER_CLASS}/class from the official train file, "
          f"{TEST_PER_CLASS}/class from the test file")
    print(f"{OUTPUT.name}: {OUTPUT.stat().st_size / 1e6:.2f} MB")
    print(f"SHA-256 {hashlib.sha256(OUTPUT.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    sys.exit(main())
