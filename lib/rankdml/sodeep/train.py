"""Command line: ``python -m rankdml.sodeep.train --sorter gruc --seq-len 100 --out gruc_n100.pt``.

Trains a sorter with :func:`rankdml.sodeep.training.train_sorter` (original recipe by default),
writes the best checkpoint to `--out` and prints the held-out L1 per synthetic family.
"""
from __future__ import annotations

import argparse
import json

from rankdml.sodeep.sorters import SORTERS
from rankdml.sodeep.training import evaluate_sorter, train_sorter


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m rankdml.sodeep.train", description=__doc__.splitlines()[0])
    parser.add_argument("--sorter", default="lstm_large", choices=[n for n in SORTERS if n != "exact"])
    parser.add_argument("--seq-len", type=int, default=100)
    parser.add_argument("--out", required=True, help="checkpoint path (.pt)")
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--steps-per-epoch", type=int, default=1406)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--decay-every", type=int, default=70)
    parser.add_argument("--gamma", type=float, default=0.5)
    parser.add_argument("--family", default="mixture")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    sorter, history = train_sorter(args.sorter, args.seq_len, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                                   batch_size=args.batch_size, lr=args.lr, decay_every=args.decay_every,
                                   gamma=args.gamma, family=args.family, seed=args.seed, device=args.device,
                                   checkpoint=args.out, show_progress=not args.no_progress)
    report = {"checkpoint": args.out, "best_val_l1": min(r["val_l1"] for r in history),
              "held_out_l1": evaluate_sorter(sorter, args.seq_len)}
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
