"""Smooth-AP: time and peak memory of rankdml's SmoothAPLoss against the B x B x B form (not a test).

    python bench/bench_smooth_ap.py [--quick] [--out DIR] [--threads N]

Writes DIR/bench_smooth_ap.json (default DIR: outputs/bench), a list of rows {"case", "ours_s",
"theirs_s", "floor_s", "ours_mb", "theirs_mb", "target", "met", "note"}, and prints them as a
markdown table. Every number is one forward + backward on L2-normalised random embeddings, float32,
D = 512, CPU, `--threads` intra-op threads (default 1), labels in contiguous blocks of 4 (the
official layout; our loss does not need it):

- ours: ``rankdml.losses.SmoothAPLoss`` (variant="original" where compared with the original
  computation, so that the values agree too);
- B^3: the official code's computation re-derived with B x B x B tensors (``cube_loss`` in
  tests/reference/smooth_ap.py, checked there against naive loops and against our loss);
- pml: pytorch-metric-learning 2.9.0 ``SmoothAPLoss`` (also B x B x B);
- checkpoint: our blocks with ``torch.utils.checkpoint`` and autograd instead of the analytic
  backward (the design alternative);
- floor: ``cosine_similarity(x).sum()`` forward + backward, what any loss on the (B, B)
  similarities pays.

Time: CPU time of the process (``time.process_time``) of the fastest of the repeats (after the
memory run, which is the warm-up), as ``timeit`` advises: on a shared machine the slower repeats
measure the other jobs (cache and memory-bandwidth contention), not the code. The medians are in
the note of the speed row and in the progress lines. Peak memory: each
(case, implementation) runs in a fresh subprocess; after imports, a warm-up on a tiny batch and the
inputs, the peak resident set size (``ru_maxrss``) is read, one forward + backward is run, and the
increase of the peak is reported (MB = 2**20 bytes).
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PER_CLASS = 4  # the official default
DIM = 512


def _implementation(name: str, num_classes: int):
    """loss(x, labels) -> scalar for one implementation."""
    import torch
    from rankdml.losses import SmoothAPLoss

    if name in ("ours", "ours_paper"):
        loss = SmoothAPLoss(temperature=0.01, variant="original" if name == "ours" else "paper")
        return lambda x, y: loss(x, y)
    if name == "cube":
        sys.path.insert(0, str(ROOT / "tests"))
        from reference.smooth_ap import cube_loss
        return lambda x, y: cube_loss(x, num_classes, 0.01)
    if name == "pml":
        from pytorch_metric_learning.losses import SmoothAPLoss as PMLSmoothAP
        loss = PMLSmoothAP(temperature=0.01)
        return lambda x, y: loss(x, y)
    if name == "checkpoint":
        return _checkpointed
    if name == "floor":
        from rankdml.distances import cosine_similarity
        return lambda x, y: cosine_similarity(x).sum()
    raise ValueError(f"unknown implementation {name!r}")


def _checkpointed(x, labels, temperature=0.01):
    """variant="original" with torch.utils.checkpoint per block instead of the analytic backward."""
    import torch
    from torch.utils.checkpoint import checkpoint
    from rankdml.distances import cosine_similarity
    from rankdml.losses.smooth_ap import DEFAULT_BLOCK_ELEMENTS, _block_terms, _blocks, _pairs
    from rankdml.masks import same_label

    t = cosine_similarity(x) / temperature
    pairs = _pairs(same_label(labels), None)

    def block_ap_sum(t, blk):
        _, _, rank_pos, rank_all = _block_terms(t, pairs, blk, True)
        return (rank_pos / rank_all * pairs.valid[blk]).sum(1)

    blocks = _blocks(pairs, t.shape[1], DEFAULT_BLOCK_ELEMENTS)
    ap = torch.cat([checkpoint(block_ap_sum, t, blk, use_reentrant=False) for blk in blocks])
    return 1.0 - (ap / pairs.counts).mean()


def worker(impl: str, batch: int, per_class: int, threads: int, repeats: int, budget_s: float) -> dict:
    """Run in a fresh process: peak-memory increase of one step, then the CPU time of the repeats."""
    import torch

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    num_classes = batch // per_class
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    x = torch.nn.functional.normalize(torch.randn(batch, DIM, generator=g), dim=1)
    # Warm-up on a tiny batch (4 x 4, a layout every implementation accepts): kernels, autograd engine.
    small = torch.nn.functional.normalize(torch.randn(16, DIM, generator=g), dim=1).requires_grad_(True)
    _implementation(impl, 4)(small, torch.arange(4).repeat_interleave(4)).backward()
    fn = _implementation(impl, num_classes)
    e = x.clone().requires_grad_(True)
    gc.collect()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    value = fn(e, labels)
    value.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    value, e = float(value.detach()), None
    gc.collect()
    cpu, wall, start = [], [], time.perf_counter()
    while len(cpu) < repeats and (len(cpu) < 1 or time.perf_counter() - start < budget_s):
        e = x.clone().requires_grad_(True)
        t0, w0 = time.process_time(), time.perf_counter()
        fn(e, labels).backward()
        cpu.append(time.process_time() - t0)
        wall.append(time.perf_counter() - w0)
    return {"impl": impl, "batch": batch, "value": value, "peak_mb": (peak - base) / 1024.0,
            "time_s": min(cpu), "median_s": statistics.median(cpu), "wall_s": min(wall), "repeats": len(cpu)}


def measure(impl: str, batch: int, args, per_class: int = PER_CLASS) -> dict:
    cmd = [sys.executable, __file__, "--worker", impl, str(batch), str(per_class), "--threads", str(args.threads),
           "--repeats", str(args.repeats), "--budget", str(args.budget)]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout  # stderr: shown
    result = json.loads(out.strip().splitlines()[-1])
    print(f"  {impl:10s} B={batch:5d} ({batch // per_class}x{per_class}): {result['time_s'] * 1e3:10.2f} ms CPU "
          f"(median {result['median_s'] * 1e3:.2f}), {result['peak_mb']:9.1f} MB, "
          f"loss {result['value']:.6f} ({result['repeats']} repeats)", file=sys.stderr, flush=True)
    return result


def row(case, ours, theirs, floor, target, met, note) -> dict:
    return {"case": case, "ours_s": ours and ours["time_s"], "theirs_s": theirs and theirs["time_s"],
            "floor_s": floor and floor["time_s"], "ours_mb": ours and ours["peak_mb"],
            "theirs_mb": theirs and theirs["peak_mb"], "target": target, "met": met, "note": note}


def _fmt(v, digits=4):
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer batch sizes and repeats")
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench"))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--budget", type=float, default=None, help="seconds of timing per measurement")
    parser.add_argument("--worker", nargs=3, metavar=("IMPL", "B", "K"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats is None:
        args.repeats = 5 if args.quick else 15
    if args.budget is None:
        args.budget = 1.5 if args.quick else 10.0
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), int(args.worker[2]), args.threads, args.repeats, args.budget)))
        return

    import torch
    sizes = [128, 384, 4096] if args.quick else [64, 128, 256, 384, 512, 1024, 2048, 4096]
    cube_max = 384 if args.quick else 512
    print(f"torch {torch.__version__}, {args.threads} thread(s), D = {DIM}, {PER_CLASS} per class, float32, "
          f"CPU time (fastest of <= {args.repeats})", file=sys.stderr)
    m = {}
    for B in sizes:
        for impl in ("floor", "ours") + (("cube",) if B <= cube_max else ()):
            m[impl, B] = measure(impl, B, args)
    m["ours_paper", 384] = measure("ours_paper", 384, args)
    m["pml", 384] = measure("pml", 384, args)
    # P = K: 8 classes x 8 is the only kind of layout where pytorch-metric-learning is right.
    m["ours", "8x8"], m["pml", "8x8"] = measure("ours", 64, args, 8), measure("pml", 64, args, 8)
    m["floor", 64] = m.get(("floor", 64)) or measure("floor", 64, args)
    m["checkpoint", 2048] = measure("checkpoint", 2048, args) if 2048 in sizes else None
    m["checkpoint", 4096] = None if args.quick else measure("checkpoint", 4096, args)  # quick: <= 3 minutes in all

    rows = []
    o, c, f = m["ours", 384], m["cube", 384], m["floor", 384]
    agree = abs(o["value"] - c["value"])
    rows.append(row("B=384 (96x4): speed vs B^3", o, c, f, ">= 300x faster", c["time_s"] / o["time_s"] >= 300,
                    f"{c['time_s'] / o['time_s']:.0f}x (medians: {c['median_s'] / o['median_s']:.0f}x); wall "
                    f"{o['wall_s'] * 1e3:.1f} ms vs {c['wall_s']:.2f} s; "
                    f"same loss (|diff| {agree:.1e}); paper variant {m['ours_paper', 384]['time_s'] * 1e3:.1f} ms"))
    rows.append(row("B=384 (96x4): memory vs B^3", o, c, f, ">= 100x less peak memory",
                    c["peak_mb"] / max(o["peak_mb"], 1e-9) >= 100,
                    f"{c['peak_mb'] / max(o['peak_mb'], 1e-9):.0f}x (ru_maxrss increase, fresh process)"))
    o4 = m["ours", 4096]
    cube_gb = 4096 ** 3 * 4 / 2 ** 30
    rows.append(row("B=4096 (1024x4): one step", o4, None, m["floor", 4096], "<= 2048 MB peak on the CPU",
                    o4["peak_mb"] <= 2048,
                    f"the B^3 form: one float32 (B, B, B) tensor alone is {cube_gb:.0f} GiB (not run)"))
    p = m["pml", 384]
    rows.append(row("B=384 (96x4) vs PML SmoothAPLoss", o, p, f, "PML's value is wrong here (it assumes P = K)",
                    abs(o["value"] - p["value"]) > 1e-3,
                    f"PML {p['value']:.4f} vs {o['value']:.4f}: PML views the batch as B / #classes = 4 blocks "
                    f"of 96 items, as if 4 classes of 96 (right only when P = K)"))
    o8, p8 = m["ours", "8x8"], m["pml", "8x8"]
    rows.append(row("B=64 (8x8) vs PML SmoothAPLoss", o8, p8, m["floor", 64],
                    "same value where PML is right (P = K)", abs(o8["value"] - p8["value"]) < 1e-5,
                    f"|diff| {abs(o8['value'] - p8['value']):.1e} (PML accumulates AP in float32)"))
    for B in [b for b in (2048, 4096) if m.get(("checkpoint", b))]:
        ck, ob = m["checkpoint", B], m["ours", B]
        rows.append(row(f"B={B}: analytic backward vs checkpoint", ob, ck, m["floor", B],
                        "analytic backward no slower, no more memory",
                        ob["time_s"] <= ck["time_s"] and ob["peak_mb"] <= ck["peak_mb"],
                        f"{ck['time_s'] / ob['time_s']:.2f}x time, {ck['peak_mb'] / max(ob['peak_mb'], 1e-9):.2f}x "
                        f"memory; |loss diff| {abs(ck['value'] - ob['value']):.1e}"))
    for B in sizes:
        cube = m.get(("cube", B))
        note = f"theirs = B^3 form, |loss diff| {abs(cube['value'] - m['ours', B]['value']):.1e}" if cube else \
            f"B^3 not run: one (B, B, B) float32 tensor = {B ** 3 * 4 / 2 ** 30:.1f} GiB"
        rows.append(row(f"B={B}", m["ours", B], cube, m["floor", B], "scaling (plot)", None, note))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_smooth_ap.json").write_text(json.dumps(rows, indent=1))
    print("| case | ours s | theirs s | floor s | ours MB | theirs MB | target | met | note |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(_fmt(r[k]) for k in ("case", "ours_s", "theirs_s", "floor_s", "ours_mb", "theirs_mb",
                                                     "target", "met", "note")) + " |")
    print(f"\nwritten: {out / 'bench_smooth_ap.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
