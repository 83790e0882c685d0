"""Derive the reproduction check's tolerances from the spread of each chapter's metrics over seeds.

    python tools/derive_tolerances.py RUNS_DIR [RUNS_DIR ...]   # -> book/results/tolerances.json

Every `<chapter>/metrics.json` under the given folders is one seed of that chapter (as written by
`tools/run_chapter.py ... -p seed N --out-dir RUNS_DIR`); the stored notebook's own metrics
(book/results/<chapter>.json) count as one more. For each chapter and metric the tolerance is
FACTOR x the largest standard deviation over seeds among the chapter's rows: a run on another
device diverges from the stored one in its float rounding, which after a few hundred optimiser
steps acts like another seed, and the difference of two such runs has a standard deviation of
sqrt(2) sd, so FACTOR = 4 leaves about 2.8 standard deviations of that difference.
"""
from __future__ import annotations

import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

from rankdml.book import row_key  # noqa: E402  (rows named after a chosen epoch line up without it)
RESULTS = ROOT / "book" / "results"
FACTOR = 4.0


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    runs: dict[str, list[dict]] = defaultdict(list)
    for stored in sorted(RESULTS.glob("[0-9][0-9]_*.json")):
        runs[stored.stem].append(json.loads(stored.read_text()))
    for folder in map(Path, argv):
        for path in sorted(folder.glob("*/metrics.json")):
            runs[path.parent.name].append(json.loads(path.read_text()))
    chapters, seeds = {}, {}
    for chapter, results in sorted(runs.items()):
        seeds[chapter] = sorted(int(r["parameters"].get("seed", -1)) for r in results)
        if len(set(seeds[chapter])) < 3:
            print(f"{chapter}: only seeds {seeds[chapter]}, at least 3 are needed: no tolerances", file=sys.stderr)
            continue
        spread = defaultdict(float)
        keyed = [{row_key(name): values for name, values in r["metrics"].items()} for r in results]
        for row in keyed[0]:
            for metric in keyed[0][row]:
                values = [k[row][metric] for k in keyed]
                spread[metric] = max(spread[metric], float(np.std(values, ddof=1)))
        chapters[chapter] = {m: math.ceil(FACTOR * s * 1e4) / 1e4 for m, s in sorted(spread.items())}
    out = {"how": f"{FACTOR:g} x the largest standard deviation over seeds among a chapter's rows; "
                  "regenerate with: python tools/derive_tolerances.py " + " ".join(argv),
           "seeds": seeds, "chapters": chapters}
    (RESULTS / "tolerances.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(json.dumps(chapters, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
