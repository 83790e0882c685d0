"""Leave-one-out retrieval metrics at the real test sets' sizes: ours vs the floor, the previous search, PML.

    python bench/bench_metrics.py [--quick] --out DIR     -> DIR/bench_metrics.json + a markdown table

Cases (random unit vectors with each test set's size, class count and K list; the values mean
nothing, the times do): CUB-200-2011 (5,924 items, 100 classes, K = 1, 2, 4, 8), Cars196 (8,131,
98 classes, K = 1, 2, 4, 8), Stanford Online Products (60,502, 11,316 classes of 2..~10 items,
~5.3 on average, K = 1, 10, 100, 1000); D = 128 and 512. Quick: CUB (D = 512), Cars (D = 128) and an
SOP-shaped set of 12,000 items (D = 128), one repeat each. Per case, in one run, with the harness's thread count:

* floor: the blocked N x N x D matrix product alone (the same row blocks, `torch.mm` into a buffer);
* ours: `retrieval_metrics(..., nmi=False)` (Recall@K, P@1, R-precision, MAP@R);
* previous: the top-K_max search it replaced (tests/reference/metrics.py), values compared exactly;
* PML: pytorch-metric-learning's AccuracyCalculator (P@1, R-precision, MAP@R; it has no Recall@K)
  with k="max_bin_count"; its default k=None asks for all N - 1 neighbours (N^2 x 12 bytes).

Memory: peak resident memory added by the call (VmHWM after a reset, see `_common`). The previous
search runs at SOP size only for D = 512 (it takes minutes; values compared there).
Target (issue 17): ours <= 1.5x the floor at SOP size with K = 1, 10, 100, 1000.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))  # tests.reference.metrics: the previous search
import _common as C  # noqa: E402

from rankdml import metrics as M  # noqa: E402
from tests.reference.metrics import topk_retrieval_metrics  # noqa: E402

SETS = {  # name: (N, classes, ks)
    "CUB": (5924, 100, (1, 2, 4, 8)),
    "Cars": (8131, 98, (1, 2, 4, 8)),
    "SOP": (60502, 11316, (1, 10, 100, 1000)),
    "SOP-shaped 12k": (12000, 2244, (1, 10, 100, 1000)),
}
RAM_GB = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30


def make_case(n: int, d: int, n_classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit-norm Gaussian embeddings (n, d); every class twice, the rest of the items at random."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = np.concatenate([np.arange(n_classes), np.arange(n_classes), rng.integers(0, n_classes, n - 2 * n_classes)])
    return x, rng.permutation(labels)


def floor(x: np.ndarray) -> None:
    """The N x N x D product in the search's row blocks, nothing else."""
    xt = torch.from_numpy(x)
    n = xt.shape[0]
    rows = max(1, M._BLOCK_ELEMENTS // n)
    buf = torch.empty(rows, n)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        torch.mm(xt[r0:r1], xt.T, out=buf[:r1 - r0])


def timed(fn):
    """(seconds, peak MiB added, result) of one call."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = C._status_mb("VmRSS")
    except OSError:
        before = None
    t0 = time.perf_counter()
    out = fn()
    sec = time.perf_counter() - t0
    mb = None if before is None else max(0.0, C._status_mb("VmHWM") - before)
    return sec, mb, out


def pml_metrics(x: np.ndarray, y: np.ndarray) -> dict:
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calc = AccuracyCalculator(include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
                              k="max_bin_count", device=torch.device("cpu"))
    return calc.get_accuracy(torch.from_numpy(x), torch.from_numpy(y))


def run_case(name: str, d: int, repeats: int, previous: bool) -> list[dict]:
    n, n_classes, ks = SETS[name]
    x, y = make_case(n, d, n_classes)
    label = f"{name} {n:,} x {d}, K = {', '.join(map(str, ks))}"
    res: dict[str, list] = {"floor": [], "ours": [], "previous": [], "pml": []}
    fns = {"floor": lambda: floor(x), "ours": lambda: M.retrieval_metrics(x, y, ks, nmi=False, backend="torch")}
    fns["pml"] = lambda: pml_metrics(x, y)
    if previous:
        fns["previous"] = lambda: topk_retrieval_metrics(x, y, ks)
    for _ in range(repeats):  # interleaved: floor, ours, previous, PML, floor, ...
        for key, fn in fns.items():
            res[key].append(timed(fn))
            print(f"    {label} {key}: {res[key][-1][0]:.2f} s", flush=True)
    med = {k: float(np.median([t for t, _, _ in v])) for k, v in res.items() if v}
    mem = {k: max((m for _, m, _ in v if m is not None), default=None) for k, v in res.items() if v}
    ours = res["ours"][0][2]
    rows = []
    q = med["ours"] / med["floor"]
    sop = name == "SOP"
    rows.append(C.row(f"{label}: ours vs floor", med["ours"], None, med["floor"], mem["ours"], None,
                      "<= 1.5x floor" if sop else None, (q <= 1.5) if sop else None,
                      "floor = blocked N x N x D product alone"))
    if previous:
        same = res["previous"][0][2] == ours
        rows.append(C.row(f"{label}: ours vs previous top-K search", med["ours"], med["previous"], med["floor"],
                          mem["ours"], mem["previous"], "same values, to the last digit", same,
                          "identical values" if same else "VALUES DIFFER: " + repr((ours, res['previous'][0][2]))))
    pml = res["pml"][0][2]
    diff = max(abs(ours["precision@1"] - pml["precision_at_1"]), abs(ours["r_precision"] - pml["r_precision"]),
               abs(ours["map@r"] - pml["mean_average_precision_at_r"]))
    default_gb = n * (n - 1) * 12 / 2 ** 30
    fits = "fits" if default_gb < 0.5 * RAM_GB else "does not fit: out of memory"
    rows.append(C.row(f"{label}: ours vs PML AccuracyCalculator", med["ours"], med["pml"], med["floor"], mem["ours"],
                      mem["pml"], None, None,
                      f"PML: P@1, RP, MAP@R only (k='max_bin_count'), max |diff| {diff:.1e}; its default k=None "
                      f"needs {default_gb:.1f} GB for the N-1 neighbours ({fits} in {RAM_GB:.0f} GB)"))
    return rows


def main() -> None:
    args = C.parse_args(__doc__)
    torch.set_num_threads(args.threads)
    C.return_freed_blocks()  # memory is read in this process; its big blocks are mmapped at any threshold
    if args.quick:  # (set, D, repeats, also time the previous search)
        plan = [("CUB", 512, 1, True), ("Cars", 128, 1, True), ("SOP-shaped 12k", 128, 1, True)]
    else:  # most important first; the previous search at SOP size takes minutes: once, at D = 512
        plan = [("SOP", 512, 1, True), ("CUB", 512, 1, True), ("Cars", 512, 1, True), ("SOP", 128, 1, False),
                ("CUB", 128, 1, True), ("Cars", 128, 1, True)]
    budget = float(os.environ.get("RANKDML_BENCH_BUDGET_S", "inf"))  # seconds; cases not started in time are listed
    start = time.perf_counter()
    rows = []
    for name, d, repeats, previous in plan:
        if not C.selected(f"{name} {d}"):
            continue
        if time.perf_counter() - start > budget:
            n, _, ks = SETS[name]
            rows.append(C.row(f"{name} {n:,} x {d}, K = {', '.join(map(str, ks))}", None,
                              note=f"not run: the {budget:.0f} s budget of this run was spent"))
        else:
            rows += run_case(name, d, repeats, previous)
        (args.out / "bench_metrics.json").parent.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_metrics.json").write_text(__import__("json").dumps(rows, indent=1) + "\n")  # so far
    C.write(args.out, "metrics", rows)


if __name__ == "__main__":
    main()
