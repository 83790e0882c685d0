"""The global batch's gather against the loss it feeds, on 2 CPU processes (gloo); not a test.

    python bench/bench_distributed.py [--quick] [--out DIR] [--plot PNG]
    python bench/bench_distributed.py --replot bench/results_distributed.json --plot book/images/bench/distributed.png

Two processes (torch.multiprocessing spawn, gloo, 1 thread each) hold B/2 embeddings each
(D = 128, float32, P x K = B/8 classes x 8). Per step and per rank, median over repeats:

- ours_s: :func:`rankdml.distributed.gather_batch` forward (sizes, embeddings, labels and
  indices) + the gather's backward (one all-reduce of the (B, D) gradient);
- theirs_s: the loss on the global batch, forward + backward (what every rank computes anyway);
- floor_s: the bare collectives the gather cannot avoid: one all-gather of (B/2, D) and one
  all-reduce of (B, D), no autograd, no padding, no labels.

ours_mb: what the gather moves per rank and step (gathered embeddings + labels/indices + gradient,
analytic); theirs_mb: the loss's (B, B) float32 distance matrix (analytic, its largest tensor).
Target: the gather costs at most 25 % of the loss. Writes DIR/bench_distributed.json (a list of
rows) and prints a markdown table. ``--quick``: B = 384 and 1024 only, fewer repeats.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist

WORLD, DIM, K = 2, 128, 8
TARGET = 0.25  # the gather's time as a fraction of the loss's


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _median_time(fn, repeats: int) -> float:
    times = []
    for i in range(repeats + 1):  # one warm-up
        dist.barrier()  # start together: a collective's time is the slowest rank's
        t0 = time.perf_counter()
        fn()
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _losses():
    from rankdml.losses import ContrastiveLoss, TripletLoss

    return {"contrastive": ContrastiveLoss(), "triplet_batch_hard": TripletLoss(mining="batch_hard")}


def _worker(rank: int, port: int, sizes: list[int], repeats: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from rankdml import distributed as rd

    rd.init(backend="gloo")
    rows = []
    for B in sizes:
        g = torch.Generator().manual_seed(B)
        labels = torch.arange(B // K).repeat_interleave(K)
        x = torch.nn.functional.normalize(torch.randn(B, DIM, generator=g), dim=1)
        share = slice(rank * B // WORLD, (rank + 1) * B // WORLD)
        mine, my_labels, my_idx = x[share].contiguous(), labels[share], torch.arange(B)[share]
        grad_out = torch.ones(B, DIM)

        def gather():
            e = mine.clone().requires_grad_()
            gathered, _, _ = rd.gather_batch(e, my_labels, my_idx)
            gathered.backward(grad_out)

        def floor():
            parts = [torch.empty_like(mine) for _ in range(WORLD)]
            dist.all_gather(parts, mine)
            dist.all_reduce(grad_out.clone())

        gather_s, floor_s = _median_time(gather, repeats), _median_time(floor, repeats)
        for name, loss in _losses().items():
            def step():
                e = x.clone().requires_grad_()
                loss(e, labels).backward()

            loss_s = _median_time(step, repeats)
            moved = (B * DIM * 4 + B * 2 * 8 + B * DIM * 4) / 2 ** 20
            rows.append({"case": f"{name}, B={B}", "ours_s": gather_s, "theirs_s": loss_s, "floor_s": floor_s,
                         "ours_mb": round(moved, 3), "theirs_mb": round(B * B * 4 / 2 ** 20, 3),
                         "target": f"gather <= {TARGET:.0%} of loss", "met": None,  # set below, from the slowest rank
                         "note": f"ours = gather fwd+bwd, theirs = loss fwd+bwd on the global batch, floor = bare "
                                 f"all_gather + all_reduce; {WORLD} gloo processes x 1 thread, D={DIM}, K={K}, "
                                 f"median of {repeats}; MB analytic"})
    # the slowest rank's times are what a step costs
    for key in ("ours_s", "theirs_s", "floor_s"):
        t = torch.tensor([r[key] for r in rows], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        for r, v in zip(rows, t.tolist()):
            r[key] = v
    for r in rows:
        r["met"] = bool(r["ours_s"] <= TARGET * r["theirs_s"])
    if rank == 0:
        Path(out).write_text(json.dumps(rows))
    rd.shutdown()


def table(rows: list[dict]) -> str:
    lines = ["| case | gather (ms) | loss (ms) | bare collectives (ms) | gather / loss | gather MB | loss B×B MB | met |",
             "|---|---:|---:|---:|---:|---:|---:|:---:|"]
    for r in rows:
        lines.append(f"| {r['case']} | {1e3 * r['ours_s']:.2f} | {1e3 * r['theirs_s']:.2f} | {1e3 * r['floor_s']:.2f} "
                     f"| {r['ours_s'] / r['theirs_s']:.1%} | {r['ours_mb']:.2f} | {r['theirs_mb']:.1f} "
                     f"| {'yes' if r['met'] else 'no'} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    """Time per step of the gather and of the loss against B, one line per loss, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [{**r, "B": int(r["case"].split("B=")[1])} for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    losses = sorted({r["case"].split(",")[0] for r in rows})
    for name, colour in zip(losses, ["tab:blue", "tab:orange", "tab:green"]):
        mine = sorted((r for r in rows if r["case"].startswith(name + ",")), key=lambda r: r["B"])
        ax.plot([r["B"] for r in mine], [1e3 * r["theirs_s"] for r in mine], "o-", color=colour,
                label=f"loss: {name}")
    gather = sorted({r["B"]: r for r in rows}.values(), key=lambda r: r["B"])
    ax.plot([r["B"] for r in gather], [1e3 * r["ours_s"] for r in gather], "s--", color="black", label="gather")
    ax.plot([r["B"] for r in gather], [1e3 * r["floor_s"] for r in gather], ":", color="grey",
            label="bare collectives")
    ax.set_xscale("log", base=2), ax.set_yscale("log")
    ax.set_xlabel("global batch size B"), ax.set_ylabel("ms per step (forward + backward)")
    ax.grid(alpha=0.3, which="both"), ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B = 384 and 1024 only, 3 repeats")
    parser.add_argument("--threads", type=int, default=1, help="accepted from bench/run.py and ignored: each "
                        "of the two ranks runs on one thread (the machine has two cores)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench"),
                        help="folder for bench_distributed.json (default outputs/bench, so that `make bench` runs it)")
    parser.add_argument("--plot", type=Path, default=None, help="also draw the figure into this PNG")
    parser.add_argument("--replot", type=Path, default=None, help="draw --plot from this stored JSON; run nothing")
    args = parser.parse_args()
    if args.replot is not None:
        if args.plot is None:
            parser.error("--replot needs --plot PNG")
        stored = json.loads(args.replot.read_text())
        plot(stored["rows"] if isinstance(stored, dict) else stored, args.plot)
        return
    sizes, repeats = ([384, 1024], 3) if args.quick else ([384, 1024, 2048, 4096], 5)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "rows.json"
        torch.multiprocessing.spawn(_worker, args=(_free_port(), sizes, repeats, str(result)), nprocs=WORLD)
        rows = json.loads(result.read_text())
    (args.out / "bench_distributed.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(f"torch {torch.__version__}, {WORLD} gloo processes x 1 thread, D = {DIM}, median of {repeats}")
    print(table(rows))
    if args.plot is not None:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
