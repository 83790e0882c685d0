"""Wall time of every chapter on its defaults (the book's 5-minute budget per chapter).

    python bench/bench_chapters.py [--quick] --out DIR      -> DIR/bench_chapters.json + a markdown table

Each book/NN_*.md is executed with tools/run_chapter.py into a temporary folder (`--out-dir`, so
the stored notebooks are left alone), with the harness's thread count. Minutes per chapter: not
run with --quick (the JSON is then an empty list), nor when RANKDML_BENCH_CHAPTERS=0.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BUDGET_S = 300.0


def main() -> None:
    args = C.parse_args(__doc__)
    rows = []
    if args.quick or os.environ.get("RANKDML_BENCH_CHAPTERS") == "0":
        print("chapters not run (QUICK mode or RANKDML_BENCH_CHAPTERS=0)")
        C.write(args.out, "chapters", rows)
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TQDM_DISABLE": "1"}
    for md in sorted((ROOT / "book").glob("[0-9][0-9]_*.md")):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, str(ROOT / "tools" / "run_chapter.py"), str(md), "--out-dir", tmp],
                                  cwd=ROOT, env=env, capture_output=True, text=True)
            sec = time.perf_counter() - t0
        ok = proc.returncode == 0
        rows.append(C.row(f"chapter {md.stem}", sec, target=f"<= {BUDGET_S:.0f} s", met=ok and sec <= BUDGET_S,
                          note="defaults" if ok else "FAILED: " + proc.stderr.strip().splitlines()[-1][:200]))
        print(rows[-1], flush=True)
    C.write(args.out, "chapters", rows)


if __name__ == "__main__":
    main()
