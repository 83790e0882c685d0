"""Forward + backward of every loss of rankdml against pytorch-metric-learning's (PML 2.9.0) same loss.

    python bench/bench_losses.py [--quick] --out DIR      -> DIR/bench_losses.json + a markdown table

One thread (the issue's protocol), float32, L2-normalised random embeddings, identical inputs for
both libraries. Batches: B = 120 (20 classes x 6; N-pairs/angular 60 pairs) and B = 512 (64 x 8;
256 pairs), D = 128 and 512 (quick: B = 120, D = 128). Settings are mapped to PML's as the tests in
tests/losses/ map them (Euclidean `LpDistance(normalize_embeddings=False)`, same margins); where
PML's loss is a different definition (semi-hard selection, angular, margin over all triplets) the
row says so. Time: median of interleaved runs (ours, theirs, ours, ...). Memory: peak resident
memory added by one forward + backward (`_common.peak_rss_mb`: the kernel's high-water mark, reset
before the call), ~0 for the small cases (page resolution), measured in a separate process (see
`run_memory_child`) so that its allocator setting does not touch the timings.
Target (issue 17): ours <= 1.0x PML's time and memory.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from rankdml.losses import NormSoftmaxLoss, make_loss  # noqa: E402
from rankdml.mining import DistanceWeightedSampler  # noqa: E402

MEM_SLACK_MB = 0.5  # ru_maxrss is page-granular and noisy below this


def batch(num_classes: int, per_class: int, dim: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    labels = labels[torch.randperm(labels.numel(), generator=g)]
    x = torch.nn.functional.normalize(torch.randn(labels.numel(), dim, generator=g), dim=1)
    return x, labels


def configs(dim: int, num_classes: int):
    """(label, ours, theirs (callable(e, y) -> loss) or None, pair layout?, note)."""
    from pytorch_metric_learning import distances as pd
    from pytorch_metric_learning import losses as pl
    from pytorch_metric_learning import miners as pm
    from pytorch_metric_learning.reducers import MeanReducer

    l2 = pd.LpDistance(normalize_embeddings=False)
    sq = pd.LpDistance(normalize_embeddings=False, power=2)

    def mined(loss, miner):
        return lambda e, y: loss(e, y, miner(e, y))

    yield ("contrastive", make_loss("contrastive"),
           pl.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0, distance=l2), False,
           "PML: no square, averages non-zero terms (reducer cost only)")
    yield ("triplet (all)", make_loss("triplet", mining="all"),
           pl.TripletMarginLoss(margin=0.2, distance=l2, reducer=MeanReducer()), False, "")
    yield ("triplet (batch_hard)", make_loss("triplet", mining="batch_hard"),
           mined(pl.TripletMarginLoss(margin=0.2, distance=l2, reducer=MeanReducer()), pm.BatchHardMiner(distance=l2)),
           False, "PML: BatchHardMiner + TripletMarginLoss")
    yield ("triplet (semi_hard)", make_loss("triplet", mining="semi_hard"),
           mined(pl.TripletMarginLoss(margin=0.2, distance=sq, reducer=MeanReducer()),
                 pm.TripletMarginMiner(margin=0.2, type_of_triplets="semihard", distance=sq)),
           False, "PML's semihard miner keeps every semi-hard triplet (FaceNet), ours one per pair (TF)")
    yield ("lifted", make_loss("lifted"), pl.LiftedStructureLoss(neg_margin=1.0, pos_margin=0.0, distance=l2),
           False, "")
    yield ("lifted (smooth)", make_loss("lifted", smooth=True),
           pl.GeneralizedLiftedStructureLoss(neg_margin=1.0, pos_margin=0.0, distance=l2), False,
           "PML: GeneralizedLiftedStructureLoss")
    yield ("npairs", make_loss("npairs"), pl.NPairsLoss(), True, "")
    yield ("angular (+npairs)", make_loss("angular", combine_npairs=True), pl.AngularLoss(alpha=45), True,
           "PML's angular uses all other-class samples: a different definition")
    yield ("margin", make_loss("margin"), pl.MarginLoss(margin=0.2, beta=1.2, distance=l2), False,
           "PML: every triplet, ours every pair once")
    yield ("margin (distance_weighted)",
           make_loss("margin", sampler=DistanceWeightedSampler(generator=torch.Generator().manual_seed(0))),
           mined(pl.MarginLoss(margin=0.2, beta=1.2, distance=l2), pm.DistanceWeightedMiner(cutoff=0.5,
                                                                                             nonzero_loss_cutoff=1.4)),
           False, "PML: DistanceWeightedMiner + MarginLoss")
    yield ("norm_softmax", NormSoftmaxLoss(num_classes, dim, temperature=0.05),
           pl.NormalizedSoftmaxLoss(num_classes, dim, temperature=0.05), False, "")


def fwd_bwd(loss, x, y):
    def run():
        e = x.clone().requires_grad_(True)
        loss(e, y).backward()
    return run


LAYOUTS = {120: ((20, 6), (60, 2)), 512: ((64, 8), (256, 2))}
SIZES_QUICK = [(120, 128)]
SIZES = [(120, 128), (120, 512), (512, 128), (512, 512)]


def run_memory_child(quick: bool) -> dict:
    """Peak memory of every case, measured in a child process started with MALLOC_MMAP_THRESHOLD_=65536.

    That setting makes every freed block >= 64 KiB leave the resident set (so the kernel's
    high-water mark sees each call's own peak) but also makes every allocation page-fault, which
    would slow down whichever library allocates more temporaries: hence timings here, memory there.
    """
    import json
    import subprocess

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    cmd = [sys.executable, __file__, "--memory-child", "--out", "."] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print("memory pass failed:", proc.stderr[-2000:], flush=True)
        return {}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory_child() -> None:
    import json

    quick = "--quick" in sys.argv
    torch.set_num_threads(1)
    out = {}
    for B, D in (SIZES_QUICK if quick else SIZES):
        pk, pairs = LAYOUTS[B]
        for label, ours, theirs, pair_layout, _ in configs(D, pk[0]):
            if not C.selected(label):
                continue
            x, y = batch(*(pairs if pair_layout else pk), D)
            case = {"ours": C.peak_rss_mb(fwd_bwd(ours, x, y))}
            if not (label == "lifted" and B > 120):
                case["theirs"] = C.peak_rss_mb(fwd_bwd(theirs, x, y))
            out[f"{label}, B={B}, D={D}"] = case
    print(json.dumps(out))


def main() -> None:
    if "--memory-child" in sys.argv:  # the memory pass, in its own process (run_memory_child)
        return memory_child()
    args = C.parse_args(__doc__)
    torch.set_num_threads(1)  # the protocol
    sizes = SIZES_QUICK if args.quick else SIZES
    memory = run_memory_child(args.quick)
    repeats = 5 if args.quick else 15
    rows = []
    for B, D in sizes:
        pk, pairs = LAYOUTS[B]
        for label, ours, theirs, pair_layout, note in configs(D, pk[0]):
            if not C.selected(label):
                continue
            x, y = batch(*(pairs if pair_layout else pk), D)
            if label == "lifted" and B > 120:  # PML's lifted builds (B, B, B) tensors: ~1.5 s at B = 120
                t = C.interleaved_medians({"ours": fwd_bwd(ours, x, y)}, repeats, budget_s=20.0)
                rows.append(C.row(f"{label}, B={B}, D={D}", t["ours"], None, None,
                                  memory.get(f"{label}, B={B}, D={D}", {}).get("ours"),
                                  None, "<= 1.0x PML time and memory", None,
                                  "PML not run: its (B, B, B) tensors take ~(B/120)^3 x its B = 120 time"))
                continue
            fns = {"ours": fwd_bwd(ours, x, y), "theirs": fwd_bwd(theirs, x, y)}
            mem = memory.get(f"{label}, B={B}, D={D}", {})
            t = C.interleaved_medians(fns, repeats, budget_s=20.0)
            mo, mt = mem.get("ours"), mem.get("theirs")
            met = t["ours"] <= t["theirs"] and (mo is None or mt is None or mo <= mt + MEM_SLACK_MB)
            rows.append(C.row(f"{label}, B={B}, D={D}", t["ours"], t["theirs"], None, mo, mt,
                              "<= 1.0x PML time and memory", met, note))
            print(f"  {rows[-1]['case']}: {t['ours'] * 1e3:.2f} ms vs {t['theirs'] * 1e3:.2f} ms", flush=True)
    C.write(args.out, "losses", rows)


if __name__ == "__main__":
    main()
