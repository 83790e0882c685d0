"""Three epochs of the small CNN on the emoji training classes: time and test Recall@1 before/after.

    python bench/bench_fit.py [--loss semi_hard|norm_softmax] [--epochs 3]

Issue acceptance check: a short fit must improve test Recall@1 over the untrained network.
"""
from __future__ import annotations

import argparse
import time

from torch.utils.data import DataLoader

import rankdml
from rankdml.data import PKSampler, evaluation_splits, load_dataset, train_transform
from rankdml.losses import NormSoftmaxLoss, TripletLoss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loss", choices=["semi_hard", "norm_softmax"], default="semi_hard")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    rankdml.seed_everything(0)
    train = load_dataset("emoji", "train", transform=train_transform("emoji"))
    test = evaluation_splits("emoji")["test"]
    model = rankdml.make_model("small_cnn", 128)
    if args.loss == "semi_hard":
        loss, lr = TripletLoss(margin=0.2, mining="semi_hard"), 1e-3
    else:
        loss, lr = NormSoftmaxLoss(train.num_classes, 128, temperature=0.05), 3e-3
    loader = DataLoader(train, batch_sampler=PKSampler(train.labels, 32, 3, seed=0))
    tic = time.perf_counter()
    history = rankdml.fit(model, loss, loader, epochs=args.epochs, lr=lr, eval_sets={"test": test},
                          device=args.device, progress=False)
    total = time.perf_counter() - tic
    train_seconds = sum(r["seconds"] for r in history.records if "seconds" in r)
    print(f"device {rankdml.resolve_device(args.device)}, torch threads 2, loss {args.loss}, {args.epochs} epochs")
    print(f"training {train_seconds:.1f} s ({train_seconds / args.epochs:.1f} s/epoch), total with evaluation {total:.1f} s")
    for record in history.records:
        print(f"  epoch {record['epoch']:2d}  test recall@1 {record['test/recall@1']:.4f}  "
              f"map@r {record['test/map@r']:.4f}  nmi {record['test/nmi']:.4f}")


if __name__ == "__main__":
    main()
