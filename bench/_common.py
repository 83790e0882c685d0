"""Helpers shared by the bench/bench_*.py scripts: interleaved timing, peak memory, the JSON rows.

Not part of the library. A script does not have to use them: the harness (bench/run.py) only reads
the JSON file each script writes (the row format is documented there and in `row`).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable


def parse_args(doc: str) -> argparse.Namespace:
    """The contract's command line: [--quick] --out DIR (plus --threads, fixed by the harness)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small cases only (make bench QUICK=1)")
    parser.add_argument("--out", type=Path, default=Path("bench/out"), help="folder for bench_<topic>.json")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("RANKDML_BENCH_THREADS", "2")))
    return parser.parse_args()


def selected(name: str) -> bool:
    """Whether a case runs: RANKDML_BENCH_ONLY is a comma-separated list of substrings of the case
    names (empty or unset: every case). With ``bench/run.py --only TOPIC`` the rerun cases replace
    their own rows in the committed results and the topic's other rows are kept."""
    only = [s for s in os.environ.get("RANKDML_BENCH_ONLY", "").split(",") if s]
    return not only or any(s in name for s in only)


def row(case: str, ours_s: float, theirs_s: float | None = None, floor_s: float | None = None,
        ours_mb: float | None = None, theirs_mb: float | None = None, target: str | None = None,
        met: bool | None = None, note: str = "") -> dict:
    """One result row: seconds (medians), peak MB, the target in words and whether it was met."""
    return {"case": case, "ours_s": ours_s, "theirs_s": theirs_s, "floor_s": floor_s, "ours_mb": ours_mb,
            "theirs_mb": theirs_mb, "target": target, "met": met, "note": note}


def interleaved_medians(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 2,
                        budget_s: float | None = None) -> dict[str, float]:
    """Median wall time of each function, run alternately (A B A B ...) so that a slow phase of a
    shared machine hits all of them alike and their ratios hold. `warmup` rounds are discarded;
    with `budget_s`, stops early (after at least 3 timed rounds) once the budget is spent."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    start = time.perf_counter()
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - t0)
        if budget_s is not None and i >= warmup + 2 and time.perf_counter() - start > budget_s:
            break
    return {k: statistics.median(v) for k, v in times.items()}


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise OSError(field)


def return_freed_blocks(threshold: int = 65536) -> bool:
    """Make glibc serve every block >= `threshold` bytes by its own mapping from now on (``mallopt``),
    so that freed tensors leave the resident set and `peak_rss_mb` sees each call's own peak; the
    in-process equivalent of MALLOC_MMAP_THRESHOLD_. It slows allocation-heavy code (fresh pages are
    faulted in on every call): time such code before calling this. False where there is no glibc."""
    try:
        import ctypes
        return bool(ctypes.CDLL("libc.so.6").mallopt(-3, threshold))  # M_MMAP_THRESHOLD = -3
    except (OSError, AttributeError):
        return False


def peak_rss_mb(fn: Callable[[], object]) -> float | None:
    """Peak resident memory added by one call of `fn()`, in MiB (Linux; None elsewhere).

    torch's CPU allocations are invisible to tracemalloc, so this reads the kernel's own count:
    `fn` runs once to warm up (lazy initialisation), the high-water mark is reset to the current
    resident size (``echo 5 > /proc/self/clear_refs``), `fn` runs again, and the result is
    VmHWM - VmRSS(before). Needs glibc to give freed blocks back (a process started with
    MALLOC_MMAP_THRESHOLD_=65536, or `return_freed_blocks()` first: every block >= 64 KiB is then its
    own mapping); resolution is a page, so tiny losses read ~0.
    """
    try:
        fn()
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status_mb("VmRSS")
        fn()
        return max(0.0, _status_mb("VmHWM") - before)
    except OSError:
        return None


def markdown_table(rows: list[dict]) -> str:
    head = "| case | ours | theirs | floor | ratio | ours MB | theirs MB | target | met | note |\n|---|---:|---:|---:|---:|---:|---:|---|---|---|"
    lines = [head]
    for r in rows:
        lines.append("| " + " | ".join([
            r["case"], fmt_s(r["ours_s"]), fmt_s(r["theirs_s"]), fmt_s(r["floor_s"]), fmt_ratio(r),
            fmt_mb(r["ours_mb"]), fmt_mb(r["theirs_mb"]), r["target"] or "", met_word(r["met"]),
            r["note"].replace("|", "/")]) + " |")
    return "\n".join(lines)


def ratio(r: dict) -> float | None:
    """ours / theirs when there is a comparison, else ours / floor."""
    ref = r.get("theirs_s") if r.get("theirs_s") else r.get("floor_s")
    return r["ours_s"] / ref if ref and r.get("ours_s") is not None else None


def fmt_ratio(r: dict) -> str:
    q = ratio(r)
    if q is None:
        return ""
    return f"{q:.2f}x" + ("" if r.get("theirs_s") else " floor")


def fmt_s(v: float | None) -> str:
    if v is None:
        return ""
    return f"{v * 1e3:.2f} ms" if v < 1 else f"{v:.2f} s"


def fmt_mb(v: float | None) -> str:
    return "" if v is None else f"{v:.1f}"


def met_word(met: bool | None) -> str:
    return {True: "yes", False: "**missed**", None: ""}[met]


def write(out: Path, topic: str, rows: list[dict]) -> None:
    """Write DIR/bench_<topic>.json and print the markdown table (the contract)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"bench_{topic}.json").write_text(json.dumps(rows, indent=1) + "\n")
    print(markdown_table(rows))
    sys.stdout.flush()
