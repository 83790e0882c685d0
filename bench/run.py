"""Run every benchmark and write bench/RESULTS.md, bench/results.json, the plots and the book's appendix.

    python bench/run.py [--quick] [--threads 2] [--results DIR]      (make bench / make bench QUICK=1)

Contract for a benchmark script (so that new ones are picked up without touching this file):

* its name is ``bench/bench_<topic>.py``; it runs as ``python bench/bench_<topic>.py [--quick] --out DIR``
  (it may also accept ``--threads N``; the harness passes it and sets OMP_NUM_THREADS, MKL_NUM_THREADS and
  RANKDML_BENCH_THREADS to the same N);
* it writes ``DIR/bench_<topic>.json``: a list of rows, each
  ``{"case": str, "ours_s": float, "theirs_s": float|None, "floor_s": float|None, "ours_mb": float|None,
  "theirs_mb": float|None, "target": str|None, "met": bool|None, "note": str}``
  (seconds are medians; "theirs" is what users would otherwise pick, "floor" a bound measured in the
  same run; `met` says whether the row's `target` was reached, None when it has none);
* it prints a markdown table of its rows; ``--quick`` keeps its run short (all of them together
  <= 3 minutes on the 2-core development machine);
* each comparison happens inside one run of the script (interleaved repeats), so its ratios hold on
  a noisy machine; `_common.py` has helpers (medians, peak memory, the row and the table).

The harness runs the scripts one after the other with fixed threads, the checkout's own library
first on PYTHONPATH, and glibc's allocator as it comes: times are taken without
MALLOC_MMAP_THRESHOLD_, which makes every block >= 64 KiB a fresh mapping and made some losses up to
three times slower. Each script measures peak memory where freed blocks do leave the resident set: in child
processes started with MALLOC_MMAP_THRESHOLD_=65536 (losses, sorters), from a fresh process's
ru_maxrss (Smooth-AP), or with the threshold set by mallopt at its start (metrics, whose blocks are
mmapped at any threshold). A script that fails is reported, not fatal.
Full mode writes bench/RESULTS.md, bench/results.json, book/images/bench/*.png and
book/appendix_benchmarks.md; quick mode writes the same files under bench/quick/ (not committed).
"""
from __future__ import annotations

import argparse
import datetime as dt
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

TITLES = {
    "losses": "Losses: forward + backward against pytorch-metric-learning",
    "metrics": "Retrieval metrics at the test sets' sizes",
    "fit": "Training throughput",
    "chapters": "Chapters on their defaults",
    "sorters": "Differentiable ranks: SoDeep exact vs torchsort, diffsort",
    "distributed": "Distributed: the global batch's gather against the loss",
    "smooth_ap": "Smooth-AP: the B·K·B loss against the B x B x B form",
    "magnet": "Magnet loss and RepMet; the k-means refresh",
}
#: Topics whose script draws its own figure under the same name (the book's appendix shows it): the
#: harness's summary plot goes to <topic>_rows.png instead, so it never overwrites that figure.
OWN_FIGURES = {"distributed"}


def image_path(img_dir: Path, topic: str) -> Path:
    return img_dir / (f"{topic}_rows.png" if topic in OWN_FIGURES else f"{topic}.png")


def machine() -> dict:
    import numpy
    import torch

    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = f"{names[0]} ({len(names)} logical CPUs)" if names else cpu
        flags = open("/proc/cpuinfo").read()
        isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f" {f}" in flags]
    except OSError:
        isa = []
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    versions = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}
    for mod in ("pytorch_metric_learning", "faiss"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - optional
            versions[mod] = "not installed"
    return {"cpu": cpu, "isa": isa, "ram_gb": round(ram, 1), "os": platform.platform(),
            "cuda": torch.cuda.is_available(), "versions": versions,
            "blas": "MKL" if torch.backends.mkl.is_available() else "other"}


def run_script(path: Path, quick: bool, threads: int, out: Path) -> dict:
    topic = path.stem.removeprefix("bench_")
    env = {**{k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "RANKDML_BENCH_THREADS": str(threads), "TQDM_DISABLE": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "lib")] + [p for p in [os.environ.get("PYTHONPATH")] if p])}
    cmd = [sys.executable, str(path), "--out", str(out), "--threads", str(threads)] + (["--quick"] if quick else [])
    print(f"== {path.name}", flush=True)
    t0 = time.perf_counter()
    limit = float(os.environ.get("RANKDML_BENCH_SCRIPT_TIMEOUT_S", "inf"))
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=None if limit == float("inf") else limit)
    except subprocess.TimeoutExpired as exc:  # keep what the script wrote so far
        out_text = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        proc = subprocess.CompletedProcess(cmd, -9, out_text + f"\nkilled after {limit:.0f} s "
                                           "(RANKDML_BENCH_SCRIPT_TIMEOUT_S)")
    seconds = time.perf_counter() - t0
    print(proc.stdout, flush=True)
    result = {"topic": topic, "script": f"bench/{path.name}", "seconds": round(seconds, 1),
              "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "returncode": proc.returncode, "rows": []}
    js = out / f"bench_{topic}.json"
    if js.exists() and js.stat().st_mtime >= time.time() - seconds - 1:  # written by this run (maybe partly)
        result["rows"] = json.loads(js.read_text())
    if proc.returncode != 0:
        result["error"] = "\n".join(proc.stdout.strip().splitlines()[-5:])
    if not result["rows"] and proc.returncode == 0:
        result["empty_reason"] = proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else "no rows"
    return result


def plot(topic: str, rows: list[dict], path: Path) -> bool:
    """Horizontal bars of ours/theirs (or ours/floor) per case, coloured by target met; log scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [(r["case"], C.ratio(r), r["met"], bool(r.get("theirs_s"))) for r in rows if C.ratio(r)]
    if not data:
        return False
    fig, ax = plt.subplots(figsize=(9, 0.28 * len(data) + 1.2))
    colour = {True: "tab:green", False: "tab:red", None: "tab:grey"}
    ys = range(len(data))[::-1]
    ax.barh(list(ys), [q for _, q, _, _ in data], color=[colour[m] for _, _, m, _ in data])
    ax.set_yticks(list(ys), [c if len(c) < 70 else c[:67] + "..." for c, _, _, _ in data], fontsize=7)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xlabel("time ratio: ours / theirs (or / floor where nothing to compare); < 1 is faster")
    ax.set_title(TITLES.get(topic, topic) + "  (green: target met, red: missed, grey: no target)", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def render(results: dict, image_dir_from_doc: str, book: bool) -> str:
    m = results["machine"]
    lines = []
    if book:
        lines += ["# Appendix: benchmarks", "",
                  "Speed and memory of the library's losses and metrics next to what a user would otherwise "
                  "pick (pytorch-metric-learning), and next to the floor set by the arithmetic itself, measured "
                  "on the machine the book is developed on. Every ratio compares numbers taken in the same run. "
                  "Regenerate with `make bench` (this page, `bench/RESULTS.md` and `bench/results.json` are "
                  "written together; `make bench QUICK=1` is the 3-minute version, written under `bench/quick/`).", ""]
    else:
        lines += ["# Benchmark results", "", "Written by `bench/run.py` (`make bench`); do not edit by hand.", ""]
    partial = " (this run: {}, {:.0f} s; each section gives its own date)".format(results["only"], results["seconds"]) \
        if results.get("only") else "; total {:.0f} s".format(results["seconds"])
    lines += [f"- Date: {results['date']} ({results['mode']} mode, {results['threads']} threads per benchmark "
              f"unless a section says otherwise{partial})",
              f"- Machine: {m['cpu']}, {m['ram_gb']} GB RAM, ISA {', '.join(m['isa']) or '?'}, BLAS {m['blas']}, "
              f"CUDA {'yes' if m['cuda'] else 'no'}; {m['os']}",
              "- Software: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
              "- Time: medians of interleaved repeats (ours, theirs, floor, ours, ...), seconds or ms of wall time.",
              "- Memory: peak resident memory added by one call, read from the kernel (the high-water mark "
              "VmHWM, reset through /proc/self/clear_refs just before the call, minus VmRSS then, or a fresh "
              "process's ru_maxrss where a section says so), measured with MALLOC_MMAP_THRESHOLD_=65536 so "
              "that freed tensors leave the resident set; times are measured without it (it makes every "
              "block of 64 KiB or more a fresh mapping, and made some losses up to three times slower). Resolution one "
              "page, so the small losses read ~0 MB.",
              "- Ratio: ours / theirs, or ours / floor (marked `floor`) where there is nothing to compare with.", ""]
    for res in results["scripts"]:
        lines += [f"## {TITLES.get(res['topic'], res['topic'])}", "",
                  f"`{res['script']}` ({res['seconds']:.0f} s, finished {res.get('date', results['date'])}). "
                  + first_paragraph(res["script"]), ""]
        if res.get("note"):
            lines += [f"Partial rerun: {res['note']}.", ""]
        if res.get("error"):
            lines += [f"**The script did not finish** (exit {res['returncode']}); rows written before that are "
                      "shown below.", "", "```", res["error"], "```", ""]
        if not res["rows"]:
            lines += [f"Not run this time: {res.get('empty_reason', 'no rows')}.", ""]
            continue
        lines += [C.markdown_table(res["rows"]), ""]
        met = [r["met"] for r in res["rows"] if r["met"] is not None]
        if met:
            lines += [f"Targets met: {sum(met)} of {len(met)}.", ""]
        if res.get("plot"):
            lines += [f"![{res['topic']}]({image_dir_from_doc}/{image_path(Path(), res['topic']).name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def first_paragraph(script: str) -> str:
    """The script's docstring, first line (what it measures)."""
    import ast

    doc = ast.get_docstring(ast.parse((ROOT / script).read_text())) or ""
    return doc.splitlines()[0] if doc else ""


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """`old` with the rows of the cases in `new` replaced (a case is its name up to a ':', so a rerun
    "SOP ... : ours vs floor" replaces the earlier "SOP ..." row that said it was not run); cases new
    to the topic come last."""
    key = lambda r: r["case"].split(":")[0]  # noqa: E731
    fresh = {}
    for r in new:
        fresh.setdefault(key(r), []).append(r)
    merged, done = [], set()
    for r in old:
        k = key(r)
        if k not in fresh:
            merged.append(r)
        elif k not in done:
            merged += fresh[k]
            done.add(k)
    return merged + [r for k, rows in fresh.items() if k not in done for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="rerun only the scripts whose topic contains this "
                        "(the other topics' last results are kept)")
    args = parser.parse_args()
    res_dir = HERE / "quick" if args.quick else HERE
    res_dir.mkdir(parents=True, exist_ok=True)
    out = HERE / "out" / ("quick" if args.quick else "full")
    out.mkdir(parents=True, exist_ok=True)
    img_dir = res_dir / "images" if args.quick else ROOT / "book" / "images" / "bench"
    t0 = time.perf_counter()
    scripts = [run_script(p, args.quick, args.threads, out) for p in sorted(HERE.glob("bench_*.py"))
               if args.only in p.stem]
    ran = list(scripts)  # this run's results; a partial run adds the kept topics below
    previous = res_dir / "results.json"
    if args.only:  # a partial rerun: keep the other topics' last results
        rerun = {r["topic"] for r in scripts}
        if previous.exists():
            last = json.loads(previous.read_text())["scripts"]
            if os.environ.get("RANKDML_BENCH_ONLY"):  # only some cases were rerun: keep the topic's others
                for res in scripts:
                    old = next((r for r in last if r["topic"] == res["topic"]), None)
                    if old is not None and res["returncode"] == 0:
                        res["rows"] = merge_rows(old["rows"], res["rows"])
                        res["note"] = f"cases {os.environ['RANKDML_BENCH_ONLY']!r} rerun {res['date']}; the others from {old['date']}"
            kept = [r for r in last if r["topic"] not in rerun]
        else:  # no results.json yet: the JSON files a previous (interrupted) run left in `out`
            kept = []
            for js in sorted(out.glob("bench_*.json")):
                topic = js.stem.removeprefix("bench_")
                if topic not in rerun and (HERE / f"bench_{topic}.py").exists():
                    rows = json.loads(js.read_text())
                    kept.append({"topic": topic, "script": f"bench/bench_{topic}.py", "seconds": float("nan"),
                                 "date": dt.datetime.fromtimestamp(js.stat().st_mtime, dt.timezone.utc)
                                 .strftime("%Y-%m-%d %H:%M UTC"), "returncode": 0, "rows": rows,
                                 "empty_reason": "not run (QUICK mode or RANKDML_BENCH_CHAPTERS=0)" if not rows else None})
                    kept[-1]["plot"] = bool(rows) and plot(topic, rows, image_path(img_dir, topic))
        scripts = sorted(kept + scripts, key=lambda r: r["topic"])
    for res in ran:  # after any merge of rows, so that the plot shows the section's rows
        res["plot"] = bool(res["rows"]) and plot(res["topic"], res["rows"], image_path(img_dir, res["topic"]))
    results = {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "mode": "quick" if args.quick else "full", "threads": args.threads,
               "seconds": time.perf_counter() - t0, "machine": machine(), "scripts": scripts,
               "only": args.only or None}
    (res_dir / ("results.json")).write_text(json.dumps(results, indent=1) + "\n")
    rel = os.path.relpath(img_dir, res_dir)
    (res_dir / "RESULTS.md").write_text(render(results, rel, book=False))
    if not args.quick:
        (ROOT / "book" / "appendix_benchmarks.md").write_text(render(results, "images/bench", book=True))
    print(f"wrote {res_dir / 'RESULTS.md'} in {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
