"""Differentiable ranking operators: accuracy, forward + backward time and peak memory against n (not a test).

    python bench/bench_sorters.py [--quick] --out DIR [--threads N]

Every operator maps score sequences ``x (B, n)`` to ranks in rankdml's convention (descending,
normalised to (0, 1], the largest score -> 1/n), B = 64, float32, CPU, `--threads` intra-op threads:

- ``exact``: :class:`rankdml.sodeep.sorters.ExactSorter`, the sigmoid-relaxed pairwise count at
  c = 6.8 / s, vectorised over the batch ((B, n, n) memory);
- ``exact_loop``: the original SoDeep code's way, the same formula one sequence at a time in a
  Python loop (re-derived here, :func:`exact_loop`; checked to equal ``exact`` to 1e-5 before timing);
- ``gruc``: rankdml's constrained GRU sorter (0.1 M parameters, length-free). Accuracy only with a
  trained checkpoint (the shipped ``gruc_n100.pt``, else the file named by RANKDML_GRUC_CHECKPOINT,
  else None); time and memory do not depend on the weights and use an untrained one;
- ``lstm_large``: the paper's sorter (18.6 M parameters, tied to n = 100): untrained, time and
  memory at n = 100 only;
- ``torchsort``: ``torchsort.soft_rank`` (Blondel et al. 2020), regularization "l2", strengths
  1e-4 ... 1 (1 is its default; it scales x as x / strength, so the strength that matches a given
  accuracy shrinks with n), ascending ranks r converted to (n + 1 - r) / n (checked on a 4-element
  example); left out, with a line saying so, if torchsort does not import;
- ``diffsort``: ``diffsort.DiffSortNet`` (Petersen et al.), bitonic and odd-even networks, at
  (logistic_phi, steepness 100), (cauchy, 100) and its default (cauchy, 10); the soft ranks are the
  relaxed permutation matrix P (P[i, j] = weight of input i at ascending position j: x_sorted = x @ P,
  asserted on a 4-element example at steepness 1e5) times the positions' descending ranks (n - j) / n.

Accuracy: mean |ranks - exact_rank(x)| on 128 held-out "mixture" sequences (seed 1; at n = 100 also
per family of `FAMILIES`, 32 sequences each, for exact, gruc, torchsort and diffsort bitonic).
Time: forward + backward of ``(ranks * w).sum()`` w.r.t. x (w uniform random, so the gradient is not
trivial; learned sorters frozen, as in the losses), on ``sample_sequences(64, n, "mixture")`` at
seed 0; median wall time of interleaved repeats (``_common.interleaved_medians``) in two groups:
the rows' comparisons (exact, exact_loop, every torchsort strength, the floor; up to 21 repeats)
and the slow operators (gruc, lstm_large, diffsort at its first setting: the cost does not depend
on it; up to 5). Peak memory: one forward + backward in a fresh subprocess per (method, n) for n in
(16, 64, 100, 256, 1024), started with MALLOC_MMAP_THRESHOLD_=65536 and read as
``_common.peak_rss_mb`` (kernel high-water mark reset before the call), MB = 2**20 bytes.

Rows (one per n): ours = exact; theirs = torchsort at the strength whose accuracy is closest to
exact's at that n (diffsort bitonic if torchsort is absent), with its accuracy in the note;
floor = ``exact_rank`` (a sort, no gradient); an extra row at n = 100 has theirs = the Python loop
and the target "vectorised exact >= 10x faster than the Python loop". Every (method, setting, n)
measurement, the per-family table, what was skipped and the machine go to
DIR/bench_sorters_detail.json (full mode: also book/results/bench_sorters.json, for chapter 4).
Skipped as too slow on a CPU (DiffSortNet multiplies dense (n, n) matrices in every network layer,
O(B n^3) per layer): diffsort bitonic above n = 128 (13.7 s per step at n = 256), odd-even above
n = 64 (n layers: 12 s per step at n = 128); lstm_large except at n = 100 (tied to its length).
Quick mode: n in (16, 100), no lstm_large, diffsort at n = 16 only, memory at n = 100, no
per-family table (about 35 s).

Installing the comparison libraries (benchmarking only, not dependencies of rankdml): ``pip install
diffsort``; torchsort 0.1.10 is a source distribution compiled against the installed torch, and an
``nvcc`` on PATH makes its build try the CUDA extension (which fails with a CPU-only build), so hide
it: ``PATH=.venv/bin:/usr/bin:/bin pip install --no-build-isolation torchsort``.
"""
from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import _common as C  # noqa: E402

import torch  # noqa: E402

from rankdml.sodeep.losses import shipped_checkpoint  # noqa: E402
from rankdml.sodeep.ranks import exact_rank  # noqa: E402
from rankdml.sodeep.sorters import ExactSorter, make_sorter  # noqa: E402
from rankdml.sodeep.synthetic import FAMILIES, make_generator, sample_sequences  # noqa: E402
from rankdml.sodeep.training import load_sorter  # noqa: E402

B = 64
HELD_OUT = 128
PER_FAMILY = 32
FULL_NS = (16, 32, 64, 100, 128, 256, 512, 1024)
QUICK_NS = (16, 100)
FULL_MEM_NS = (16, 64, 100, 256, 1024)
QUICK_MEM_NS = (100,)
TORCHSORT_STRENGTHS = (1e-4, 1e-3, 1e-2, 0.1, 1.0)  # 1.0: torchsort's default
DIFFSORT_SETTINGS = (("logistic_phi", 100.0), ("cauchy", 100.0), ("cauchy", 10.0))  # timed: the first; last: the default
MAX_N = {"diffsort_bitonic": 128, "diffsort_odd_even": 64}
QUICK_MAX_N = {"diffsort_bitonic": 16, "diffsort_odd_even": 16}
LSTM_N = 100
TARGET_N = 100
TARGET_SPEEDUP = 10.0


def have_torchsort() -> bool:
    try:
        import torchsort  # noqa: F401
        return True
    except Exception:  # noqa: BLE001 - optional dependency (may fail to build)
        return False


# ----------------------------------------------------------------------------------------------
# The operators: name -> (x (B, n) -> ranks (B, n))
# ----------------------------------------------------------------------------------------------

def exact_loop(x: torch.Tensor, scale: float = 6.8, order_dependent: bool = False) -> torch.Tensor:
    """The relaxed pairwise count one sequence at a time (the original's Python loop over the batch).

    r_i = (1 + sum_{j != i} sigmoid(c (x_j - x_i))) / n with c = scale / s, s a Python float (no
    gradient): sqrt(sum_{i<j} (x_j - x_i)^2 / (n^2 - 1)), or with `order_dependent` the unbiased std
    of the whole n x n matrix holding x_j - x_i above the diagonal and zeros elsewhere (the original).
    """
    n = x.shape[1]
    not_self = 1.0 - torch.eye(n, dtype=x.dtype)
    out = []
    for seq in x:  # one (n,) sequence at a time
        diff = seq.unsqueeze(0) - seq.unsqueeze(1)  # diff[i, j] = x_j - x_i
        upper = torch.triu(diff.detach(), diagonal=1)
        s = upper.std().item() if order_dependent else (upper.pow(2).sum() / (n * n - 1)).sqrt().item()
        c = scale / s if s > 0 else 0.0
        out.append((1.0 + (torch.sigmoid(c * diff) * not_self).sum(1)) / n)
    return torch.stack(out)


def soft_rank_descending(x: torch.Tensor, strength: float) -> torch.Tensor:
    import torchsort

    n = x.shape[1]
    ascending = torchsort.soft_rank(x, regularization="l2", regularization_strength=strength)  # 1..n
    return (n + 1 - ascending) / n


def diffsort_ranks(net, x: torch.Tensor) -> torch.Tensor:
    """Soft descending ranks from DiffSortNet's relaxed permutation P (B, n, n)."""
    n = x.shape[1]
    _, perm = net(x)  # perm[b, i, j]: weight of input i at ascending position j (x_sorted = x @ perm)
    position_rank = (n - torch.arange(n, dtype=x.dtype)) / n  # ascending position j -> descending rank
    return perm @ position_rank


def check_diffsort_orientation() -> None:
    """At a very high steepness the ranks must be exact: fixes which index of P is the input."""
    import diffsort

    x = torch.tensor([[0.3, -1.0, 2.0, 0.5]])
    for kind in ("bitonic", "odd_even"):
        net = diffsort.DiffSortNet(kind, 4, steepness=1e5)
        sorted_x, perm = net(x)
        assert torch.allclose(x @ perm[0], torch.sort(x).values, atol=1e-3), (kind, x @ perm[0])
        ranks = diffsort_ranks(net, x)
        assert torch.allclose(ranks, torch.tensor([[0.75, 1.0, 0.25, 0.5]]), atol=1e-3), (kind, ranks)
        assert torch.allclose(ranks, exact_rank(x), atol=1e-3)


def check_torchsort_orientation() -> None:
    """soft_rank's ranks are ascending 1..n (largest -> n): at a tiny strength the conversion gives exact_rank."""
    x = torch.tensor([[0.3, -1.0, 2.0, 0.5]])
    import torchsort

    assert torch.allclose(torchsort.soft_rank(x, regularization_strength=1e-4), torch.tensor([[2.0, 1.0, 4.0, 3.0]]))
    assert torch.allclose(soft_rank_descending(x, 1e-4), exact_rank(x))


def gruc_checkpoint() -> Path | None:
    path = shipped_checkpoint("gruc", 100)
    if path.is_file():
        return path
    env = os.environ.get("RANKDML_GRUC_CHECKPOINT")
    return Path(env) if env and Path(env).is_file() else None


def methods(n: int, ts_ok: bool, quick: bool = False) -> list[tuple[str, str, dict]]:
    """(method, setting label, settings) of every case run at length n (timed ones and accuracy-only)."""
    out = [("exact", "c = 6.8 / s", {}), ("exact_loop", "c = 6.8 / s, Python loop", {}),
           ("gruc", "6 x bi-GRU 32", {})]
    if n == LSTM_N and not quick:
        out.append(("lstm_large", "2 x bi-LSTM 512 + read-out (untrained)", {}))
    if ts_ok:
        out += [("torchsort", f"l2, strength {s:g}", {"strength": s}) for s in TORCHSORT_STRENGTHS]
    for kind in ("bitonic", "odd_even"):
        if n <= (QUICK_MAX_N if quick else MAX_N)[f"diffsort_{kind}"]:
            out += [(f"diffsort_{kind}", f"{d}, steepness {st:g}", {"distribution": d, "steepness": st})
                     for d, st in DIFFSORT_SETTINGS]
    return out


def build(method: str, n: int, settings: dict, trained: bool = False):
    """x -> ranks for one case; None when it cannot be built (gruc accuracy without a checkpoint)."""
    if method == "exact":
        sorter = ExactSorter()
        return sorter
    if method == "exact_loop":
        return exact_loop
    if method in ("gruc", "lstm_large"):
        if trained:
            path = gruc_checkpoint() if method == "gruc" else None
            if path is None:
                return None
            sorter = load_sorter(path)
        else:
            torch.manual_seed(0)
            sorter = make_sorter(method, n if method == "lstm_large" else None)
        sorter.requires_grad_(False)  # frozen, as in the losses: the gradient goes to x only
        return sorter.eval()
    if method == "torchsort":
        return lambda x: soft_rank_descending(x, settings["strength"])
    if method.startswith("diffsort_"):
        import diffsort

        net = diffsort.DiffSortNet(method.removeprefix("diffsort_"), n, steepness=settings["steepness"],
                                   distribution=settings["distribution"])
        return lambda x: diffsort_ranks(net, x)
    raise ValueError(method)


def step_fn(fn, x: torch.Tensor, w: torch.Tensor):
    """One forward + backward of (ranks * w).sum() w.r.t. a fresh leaf copy of x."""
    def step():
        leaf = x.clone().requires_grad_(True)
        (fn(leaf) * w).sum().backward()
        return leaf.grad
    return step


def recording(fns: dict, raw: dict) -> dict:
    """The same functions, each also appending its own wall time to raw[name] (warm-up rounds included)."""
    def wrap(name, fn):
        def timed():
            t0 = time.perf_counter()
            out = fn()
            raw.setdefault(name, []).append(time.perf_counter() - t0)
            return out
        return timed
    return {name: wrap(name, fn) for name, fn in fns.items()}


def timing_batch(n: int):
    x, _ = sample_sequences(B, n, "mixture", generator=make_generator(0))
    w = torch.rand(B, n, generator=torch.Generator().manual_seed(2))
    return x, w


@torch.no_grad()
def accuracy(fn, n: int, family: str = "mixture", count: int = HELD_OUT, seed: int = 1) -> float:
    x, r = sample_sequences(count, n, family, generator=make_generator(seed))
    return (fn(x) - r).abs().mean().item()


# ----------------------------------------------------------------------------------------------
# Memory: one subprocess per (method, n)
# ----------------------------------------------------------------------------------------------

def memory_worker(method: str, n: int, settings: dict, threads: int) -> float | None:
    torch.set_num_threads(threads)
    x, w = timing_batch(n)
    return C.peak_rss_mb(step_fn(build(method, n, settings), x, w))  # warm-up call, reset, measured call


def measure_memory(method: str, n: int, settings: dict, threads: int) -> float | None:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, __file__, "--out", ".", "--threads", str(threads), "--memory-worker",
           json.dumps({"method": method, "n": n, "settings": settings})]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        print(f"  memory {method} n={n} failed: {proc.stderr.strip()[-500:]}", file=sys.stderr, flush=True)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])["mb"]


# ----------------------------------------------------------------------------------------------
# Machine record
# ----------------------------------------------------------------------------------------------

def machine(threads: int) -> dict:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = f"{names[0]} ({len(names)} logical CPUs)" if names else cpu
    except OSError:
        pass
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("torchsort", "diffsort"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return {"cpu": cpu, "threads": threads, "versions": versions, "os": platform.platform(),
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def check_exact_loop() -> float:
    """exact_loop == ExactSorter to 1e-5 (both spreads), on mixture sequences of two lengths."""
    worst = 0.0
    for n in (16, 100):
        x, _ = sample_sequences(32, n, "mixture", generator=make_generator(3))
        for od in (False, True):
            diff = (exact_loop(x, order_dependent=od) - ExactSorter(order_dependent=od)(x)).abs().max().item()
            assert diff <= 1e-5, f"exact_loop differs from ExactSorter by {diff:.2e} (n={n}, order_dependent={od})"
            worst = max(worst, diff)
    return worst


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"n in {QUICK_NS} only (<= 40 s)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("RANKDML_BENCH_THREADS", "1")))
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_worker:
        spec = json.loads(args.memory_worker)
        print(json.dumps({"mb": memory_worker(spec["method"], spec["n"], spec["settings"], args.threads)}))
        return

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    ns, mem_ns = (QUICK_NS, QUICK_MEM_NS) if args.quick else (FULL_NS, FULL_MEM_NS)
    ts_ok = have_torchsort()
    ckpt = gruc_checkpoint()
    check_diffsort_orientation()
    if ts_ok:
        check_torchsort_orientation()
    loop_diff = check_exact_loop()
    skipped = [f"diffsort bitonic above n = {MAX_N['diffsort_bitonic']} and odd-even above n = "
               f"{MAX_N['diffsort_odd_even']}: DiffSortNet multiplies dense (n, n) matrices in every network layer "
               "(O(B n^3) per layer, log2(n)(log2(n)+1)/2 layers bitonic, n layers odd-even): 13.7 s per step for "
               "bitonic at n = 256 and 12 s for odd-even at n = 128 on this CPU, and GBs of saved activations",
               f"lstm_large only at n = {LSTM_N} (tied to its length; untrained, so no accuracy)"]
    if not ts_ok:
        skipped.append("torchsort: left out, it does not import in this environment")
    if ckpt is None:
        skipped.append("gruc accuracy: no trained checkpoint (lib/rankdml/sodeep/weights/gruc_n100.pt absent and "
                       "RANKDML_GRUC_CHECKPOINT unset)")
    print(f"torch {torch.__version__}, {args.threads} thread(s), B = {B}, float32; torchsort "
          f"{'yes' if ts_ok else 'NO'}; gruc checkpoint {ckpt}; |exact_loop - exact| <= {loop_diff:.1e}",
          file=sys.stderr, flush=True)

    measurements: list[dict] = []
    for n in ns:
        x, w = timing_batch(n)
        cases = methods(n, ts_ok, args.quick)
        # Time: one setting per method where the cost does not depend on it (diffsort: the first
        # setting, the most accurate); every torchsort strength (its projection's cost can depend on it).
        # Two interleaved groups: the row's comparisons (exact, loop, torchsort, floor), many repeats;
        # the slow ones (learned sorters, sorting networks), a few.
        fast, slow = {}, {}
        for method, label, settings in cases:
            if method == "torchsort" or not any(k.startswith(method + "|") for k in {**fast, **slow}):
                group = fast if method in ("exact", "exact_loop", "torchsort") else slow
                group[f"{method}|{label}"] = step_fn(build(method, n, settings), x, w)
        floor_x = x.clone()
        fast["floor|exact_rank (sort, no gradient)"] = lambda: exact_rank(floor_x)
        raw: dict[str, list[float]] = {}
        med = C.interleaved_medians(recording(fast, raw), repeats=7 if args.quick else 21, warmup=2,
                                    budget_s=2.0 if args.quick else 6.0)
        timed_runs = {k: v[2:] for k, v in raw.items()}  # without the warm-up rounds
        if slow:
            raw = {}
            med.update(C.interleaved_medians(recording(slow, raw), repeats=3 if args.quick else 5, warmup=1,
                                             budget_s=1.0 if args.quick else 5.0))
            timed_runs.update({k: v[1:] for k, v in raw.items()})
        for method, label, settings in cases + [("floor", "exact_rank (sort, no gradient)", {})]:
            runs = timed_runs.get(f"{method}|{label}", [])
            rec = {"method": method, "setting": label, "settings": settings, "n": n, "batch": B,
                   "seconds": med.get(f"{method}|{label}"), "min_seconds": min(runs) if runs else None,
                   "repeats": len(runs), "mb": None, "accuracy": None, "accuracy_note": ""}
            if method == "floor":
                rec["accuracy"] = 0.0
            elif method in ("gruc", "lstm_large"):
                fn = build(method, n, settings, trained=True)
                if fn is None:
                    rec["accuracy_note"] = ("no trained checkpoint" if method == "gruc" else
                                            "untrained (time and memory only)")
                else:
                    rec["accuracy"] = accuracy(fn, n)
                    rec["accuracy_note"] = f"checkpoint {ckpt.name}, trained at n = 100"
            else:
                rec["accuracy"] = accuracy(build(method, n, settings), n)
            measurements.append(rec)
        if n in mem_ns:
            # one subprocess per (method, n): memory does not depend on the setting (torchsort: the
            # projection is O(n) memory whatever the strength), so it is measured at the first one
            measured: dict[str, tuple[float | None, str]] = {}
            for rec in measurements:
                if rec["n"] != n or rec["method"] == "floor" or \
                        (args.quick and rec["method"] not in ("exact", "torchsort", "diffsort_bitonic")):
                    continue
                if rec["method"] not in measured:
                    measured[rec["method"]] = (measure_memory(rec["method"], n, rec["settings"], args.threads),
                                               rec["setting"])
                rec["mb"], rec["mb_setting"] = measured[rec["method"]]
        for rec in measurements:
            if rec["n"] == n:
                err = "" if rec["accuracy"] is None else format(rec["accuracy"], ".4f")
                print(f"  n={n:5d} {rec['method']:18s} {rec['setting']:34s} time {C.fmt_s(rec['seconds']):>10s}  "
                      f"mem {C.fmt_mb(rec['mb']):>7s}  err {err}", file=sys.stderr, flush=True)

    # Per-family accuracy at n = 100 (exact, gruc, torchsort, diffsort bitonic)
    per_family: dict[str, dict[str, float | None]] = {}
    if 100 in ns and not args.quick:
        fam_cases = [("exact", "c = 6.8 / s", {}), ("gruc", "6 x bi-GRU 32", {})]
        fam_cases += [c for c in methods(100, ts_ok) if c[0] in ("torchsort", "diffsort_bitonic")]
        for method, label, settings in fam_cases:
            fn = build(method, 100, settings, trained=method == "gruc")
            key = f"{method} ({label})"
            per_family[key] = {fam: (None if fn is None else
                                     accuracy(fn, 100, fam, PER_FAMILY, seed=100 + i))
                               for i, fam in enumerate(("mixture",) + FAMILIES)}
    elif args.quick:
        skipped.append("per-family accuracy: full mode only")

    rows = make_rows(measurements, ns, mem_ns, ts_ok, loop_diff)
    C.write(args.out, "sorters", rows)
    detail = {"machine": machine(args.threads), "mode": "quick" if args.quick else "full",
              "protocol": {"batch": B, "dtype": "float32", "device": "cpu", "held_out": HELD_OUT,
                           "per_family_count": PER_FAMILY, "timing": "median wall time of interleaved repeats "
                           "(_common.interleaved_medians), forward + backward of (ranks * w).sum()",
                           "memory": "peak RSS added by one forward + backward, subprocess per (method, n), "
                           "MALLOC_MMAP_THRESHOLD_=65536", "accuracy": "mean |ranks - exact_rank(x)|",
                           "ns": list(ns), "memory_ns": list(mem_ns),
                           "timing_MALLOC_MMAP_THRESHOLD_": os.environ.get("MALLOC_MMAP_THRESHOLD_")},
              "gruc_checkpoint": str(ckpt) if ckpt else None, "exact_loop_max_abs_diff": loop_diff,
              "skipped": skipped, "measurements": measurements, "per_family_n100": per_family, "rows": rows,
              "seconds": round(time.perf_counter() - t_start, 1)}
    text = json.dumps(detail, indent=1) + "\n"
    (args.out / "bench_sorters_detail.json").write_text(text)
    if not args.quick:
        (ROOT / "book" / "results" / "bench_sorters.json").write_text(text)
    print()
    print(detail_table(measurements))
    if per_family:
        print()
        print(family_table(per_family))
    print("\nLeft out: " + "; ".join(skipped))
    print(f"\nwritten: {args.out / 'bench_sorters.json'}, {args.out / 'bench_sorters_detail.json'} "
          f"({detail['seconds']:.0f} s)", file=sys.stderr)


def _get(measurements, method, n, label=None):
    hits = [r for r in measurements if r["method"] == method and r["n"] == n and (label is None or r["setting"] == label)]
    timed = [r for r in hits if r["seconds"] is not None]
    return (timed or hits or [None])[0]


def make_rows(measurements, ns, mem_ns, ts_ok, loop_diff) -> list[dict]:
    rows = []
    for n in ns:
        ours, floor = _get(measurements, "exact", n), _get(measurements, "floor", n)
        if ts_ok:
            cands = [r for r in measurements if r["method"] == "torchsort" and r["n"] == n]
            theirs = min(cands, key=lambda r: abs(r["accuracy"] - ours["accuracy"]))
            who = f"torchsort soft_rank {theirs['setting']} (closest accuracy to exact's)"
        else:
            theirs = _get(measurements, "diffsort_bitonic", n)
            who = f"diffsort bitonic {theirs['setting']}" if theirs else ""
        note = (f"err exact {ours['accuracy']:.4f}" + (f", theirs {theirs['accuracy']:.4f}" if theirs else "") +
                (f"; theirs = {who}" if theirs else "; theirs: none at this n") +
                "; floor = exact_rank (a sort, no gradient)")
        loop = _get(measurements, "exact_loop", n)
        note += f"; Python loop {C.fmt_s(loop['seconds'])} (loop / exact = {loop['seconds'] / ours['seconds']:.2g})"
        rows.append(C.row(f"n={n} B={B}: fwd+bwd", ours["seconds"], theirs and theirs["seconds"],
                          floor["seconds"], ours["mb"], theirs and theirs["mb"], None, None, note))
    if TARGET_N in ns:
        ours, loop = _get(measurements, "exact", TARGET_N), _get(measurements, "exact_loop", TARGET_N)
        speedup = loop["seconds"] / ours["seconds"]
        rows.append(C.row(f"n={TARGET_N} B={B}: vectorised exact vs Python loop", ours["seconds"], loop["seconds"],
                          _get(measurements, "floor", TARGET_N)["seconds"], ours["mb"], loop["mb"],
                          f">= {TARGET_SPEEDUP:g}x faster than the Python loop", speedup >= TARGET_SPEEDUP,
                          f"{speedup:.1f}x; theirs = the original's per-sequence loop re-derived (same values, "
                          f"max |diff| {loop_diff:.1e})"))
    return rows


def detail_table(measurements) -> str:
    lines = ["| n | method | setting | mean abs err | fwd+bwd (median) | fastest | peak MB |",
             "|---:|---|---|---:|---:|---:|---:|"]
    for r in measurements:
        err = "" if r["accuracy"] is None else f"{r['accuracy']:.4f}"
        if r["accuracy"] is None and r["accuracy_note"]:
            err = r["accuracy_note"]
        lines.append(f"| {r['n']} | {r['method']} | {r['setting']} | {err} | {C.fmt_s(r['seconds'])} | "
                     f"{C.fmt_s(r['min_seconds'])} | "
                     f"{C.fmt_mb(r['mb'])} |")
    return "\n".join(lines)


def family_table(per_family) -> str:
    fams = ("mixture",) + FAMILIES
    lines = ["| n = 100 | " + " | ".join(fams) + " |", "|---|" + "---:|" * len(fams)]
    for key, vals in per_family.items():
        lines.append(f"| {key} | " + " | ".join("" if vals[f] is None else f"{vals[f]:.4f}" for f in fams) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
