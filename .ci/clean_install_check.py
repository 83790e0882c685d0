"""Run by .ci/clean_install inside a fresh venv, from a folder outside the clone: the installed wheel
alone must load both embedded data sets, compute retrieval metrics and train one step.

Usage: <fresh venv>/bin/python clean_install_check.py <path of the clone, which must not be used>
"""
from __future__ import annotations

import importlib
import sys
from importlib import metadata, resources
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

import rankdml
from rankdml.metrics import retrieval_metrics

clone = Path(sys.argv[1]).resolve()
torch.set_num_threads(1)


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"clean install: FAILED: {what}")
    print(f"  ok  {what}")


package = Path(rankdml.__file__).resolve().parent
check(clone not in package.parents and "site-packages" in package.parts,
      f"rankdml is imported from the installed wheel ({package}), not from the clone")
check(metadata.version("rankdml") == rankdml.__version__, f"version {rankdml.__version__} (package = metadata)")
check((package / "py.typed").is_file(), "py.typed ships")
licences = {Path(str(f)).name for f in metadata.files("rankdml") if ".dist-info/licenses/" in str(f)}
check({"LICENSE", "LICENSES.md", "EMOJI_LICENSE.md", "FASHION_LICENSE.md"} <= licences,
      f"licence files in the dist-info: {sorted(licences)}")
check(resources.files("rankdml.data.files").joinpath("EMOJI_LICENSE.md").is_file(), "data licences next to the data")

emoji = {split: rankdml.load_dataset("emoji", split) for split in ("train", "val", "test")}
fashion = {split: rankdml.load_dataset("fashion", split) for split in ("train", "test")}
check(len(emoji["test"]) > 2000 and len(fashion["test"]) == 3000,
      f"embedded sets load: emoji test {len(emoji['test'])}, fashion test {len(fashion['test'])}")
check("cub200" in importlib.import_module("rankdml.data.download").load_manifest()["datasets"],
      "the benchmarks' manifest ships")

# Retrieval metrics (faiss k-means for NMI included) on raw pixels of the fashion test split.
pixels = np.asarray(fashion["test"].images, dtype=np.float32).reshape(len(fashion["test"]), -1) / 255
scores = retrieval_metrics(pixels, fashion["test"].labels, ks=(1, 2))
check(all(0 <= v <= 1 for v in scores.values()) and "nmi" in scores,
      "retrieval_metrics: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))

# One training step of fit: one P x K batch of emoji (8 classes x 3 images).
train = emoji["train"]
batch = [i for c in range(8) for i in np.flatnonzero(train.labels == c)[:3].tolist()]
model = rankdml.make_model("small_cnn", 32)
before = [p.detach().clone() for p in model.parameters()]
rankdml.fit(model, rankdml.make_loss("triplet"), DataLoader(train, batch_sampler=[batch]), epochs=1, device="cpu")
changed = sum(not torch.equal(a, b.detach().cpu()) for a, b in zip(before, model.parameters()))
check(changed > 0, f"fit ran one step on the CPU ({changed} parameter tensors updated)")
print("clean install: all checks passed")
