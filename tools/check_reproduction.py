"""Re-execute chapters on this machine (any device) and compare their metrics with the stored ones.

    python tools/check_reproduction.py                 # every chapter
    python tools/check_reproduction.py 01 --out-dir outputs/reproduction

Each chapter runs on its defaults (device "auto": CUDA where there is a GPU) into --out-dir; its
metrics.json is compared with book/results/<chapter>.json within the per-metric tolerances of
book/results/tolerances.json, which were measured as the spread over seeds (tools/derive_tolerances.py).
On an x86-64 CPU in the reproducible mode every difference should be exactly 0.
Exits 1 when a metric is outside its tolerance.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from rankdml.book import compare_metrics, reproduction_table, stored_metrics, tolerances  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("chapters", nargs="*", help="chapter numbers or names (default: all)")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "outputs" / "reproduction")
    args = parser.parse_args(argv)
    sources = sorted((ROOT / "book").glob("[0-9][0-9]_*.md"))
    if args.chapters:
        sources = [s for s in sources if any(s.stem.startswith(c) for c in args.chapters)]
        if not sources:
            parser.error(f"no chapter matches {args.chapters}")
    failed = 0
    for source in sources:
        print(f"== {source.stem}: executing on this machine ...", flush=True)
        subprocess.run([sys.executable, str(ROOT / "tools" / "run_chapter.py"), str(source), "--out-dir",
                        str(args.out_dir)], check=True)
        now = json.loads((args.out_dir / source.stem / "metrics.json").read_text())["metrics"]
        tolerance = tolerances(source.stem)
        if not tolerance:
            print(f"no tolerances measured for {source.stem} yet (its seeds were not run): any difference is flagged")
        rows = compare_metrics(stored_metrics(source.stem), now, tolerance)
        print(reproduction_table(rows), flush=True)
        failed += sum(r["verdict"] != "ok" for r in rows)
    print("reproduction check: " + ("passed" if not failed else f"{failed} metrics outside their tolerance"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
