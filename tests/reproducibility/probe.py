"""A short training run whose every number must not depend on the CPU in the reproducible mode.

    python tests/reproducibility/probe.py [--fast]     # prints one JSON line

12 optimiser steps of the small CNN with a semi-hard triplet loss on emoji (convolutions, linear
layers, element-wise kernels, reductions, Adam), then retrieval metrics with NMI on the validation
split (torch matrix products and faiss k-means). `--fast` leaves the mode off.
"""
import hashlib
import json
import sys

import torch
from torch.utils.data import DataLoader

import rankdml
from rankdml.data import PKSampler, load_dataset, train_transform
from rankdml.metrics import embed, retrieval_metrics


def main() -> None:
    rankdml.seed_everything(0, reproducible="--fast" not in sys.argv)
    train = load_dataset("emoji", "train", transform=train_transform("emoji"))
    loader = DataLoader(train, batch_sampler=PKSampler(train.labels, 32, 3, seed=0))
    model = rankdml.make_model("small_cnn", 64)
    loss_fn = rankdml.losses.TripletLoss(margin=0.2, mining="semi_hard")
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    losses = []
    for step, (images, labels) in enumerate(loader):
        if step == 12:
            break
        loss = loss_fn(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    weights = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    val = load_dataset("emoji", "val")
    embeddings, labels = embed(model, val, batch_size=256, device="cpu")
    metrics = retrieval_metrics(embeddings, labels, ks=(1, 2, 4, 8), nmi=True)
    print(json.dumps({"weights": weights[:20], "losses": [float.hex(v) for v in losses],
                      "metrics": {k: float.hex(float(v)) for k, v in metrics.items()},
                      "mode": rankdml.reproducible.status()}))


if __name__ == "__main__":
    main()
