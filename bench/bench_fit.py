"""`rankdml.train.fit` throughput (images/s): the small CNN on the emoji set, ResNet-50 on photos' size.

    python bench/bench_fit.py [--quick] --out DIR      -> DIR/bench_fit.json + a markdown table

One epoch of a few dozen P x K batches (triplet loss, semi-hard mining, Adam), no evaluation, on
the CPU with the harness's thread count; the time includes data loading and augmentation.

* small CNN, emoji train split (32 px), P x K = 32 x 3: 32 batches (quick: 8);
* ResNet-50 (random init, no download), 224 px random images, P x K = 8 x 3: 3 batches (not in
  quick mode), pre-built batches (measured: the model's forward + backward + step, not decoding).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

import rankdml  # noqa: E402
from rankdml.data import PKSampler, load_dataset, train_transform  # noqa: E402
from rankdml.losses import TripletLoss  # noqa: E402


def epoch_seconds(model, loader) -> float:
    loss = TripletLoss(margin=0.2, mining="semi_hard")
    t0 = time.perf_counter()
    rankdml.train.fit(model, loss, loader, epochs=1, lr=1e-3, evaluate_before=False, device="cpu", progress=False)
    return time.perf_counter() - t0


def main() -> None:
    args = C.parse_args(__doc__)
    torch.set_num_threads(args.threads)
    rows = []
    rankdml.seed_everything(0)
    train = load_dataset("emoji", "train", transform=train_transform("emoji"))
    n_small = 4 if args.quick else 32
    batches = list(PKSampler(train.labels, 32, 3, seed=0))[:n_small]
    loader = DataLoader(train, batch_sampler=batches)
    sec = epoch_seconds(rankdml.make_model("small_cnn", 128), loader)
    images = sum(len(b) for b in batches)
    rows.append(C.row(f"fit small_cnn, emoji 32 px, {len(batches)} batches of 96", sec,
                      note=f"{images / sec:.0f} images/s, {args.threads} threads"))
    print(rows[-1], flush=True)

    if not args.quick:
        n_big, p, k = 3, 8, 3
        g = torch.Generator().manual_seed(0)
        labels = torch.arange(p).repeat_interleave(k)
        big = [(torch.randn(p * k, 3, 224, 224, generator=g), labels[torch.randperm(p * k, generator=g)])
               for _ in range(n_big)]
        sec = epoch_seconds(rankdml.make_model("resnet50", 128, pretrained=False), big)
        rows.append(C.row(f"fit resnet50, 224 px, {n_big} batches of {p * k}", sec,
                          note=f"{p * k * n_big / sec:.1f} images/s, {args.threads} threads"))
    C.write(args.out, "fit", rows)


if __name__ == "__main__":
    main()
