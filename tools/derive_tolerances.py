"""Derive the reproduction check's tolerances from the spread of each chapter's metrics over seeds.

    python tools/derive_tolerances.py [RUNS_DIR ...]   # -> book/results/tolerances.json

Every `<chapter>/metrics.json` under the given folders is one seed of that chapter (as written by
`tools/run_chapter.py book/<chapter>.md -p seed N --out-dir RUNS_DIR`); it is first copied into
book/results/seeds/<chapter>/seed<N>.json, which is committed, so the derivation can be redone from
the repository alone (`python tools/derive_tolerances.py` without arguments). The stored notebook's
own metrics (book/results/<chapter>.json, seed 0) count as one more seed. A seed run must use the
stored run's parameters but for the seed; anything else is refused.

For each chapter with at least three seeds and each metric, the tolerance is FACTOR x the largest
standard deviation over seeds among the chapter's rows: a run on another device diverges from the
stored one in its float rounding, which after a few hundred optimiser steps acts like another seed,
and the difference of two such runs has a standard deviation of sqrt(2) sd, so FACTOR = 4 leaves
about 2.8 standard deviations of that difference. Chapters with fewer seeds keep what
tolerances.json said of them before (their entry or their "not_measured" reason).
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
SEEDS = RESULTS / "seeds"
FACTOR = 4.0
HOW = ("{factor:g} x the largest standard deviation over seeds among a chapter's rows; seed 0 is the stored "
       "notebook, the others are in book/results/seeds/. Regenerate a chapter's seeds with: for s in 1 2; do "
       "python tools/run_chapter.py book/<chapter>.md -p seed $s --out-dir runs/tolerances/s$s; done; "
       "python tools/derive_tolerances.py runs/tolerances/s1 runs/tolerances/s2")


def import_runs(folders: list[Path]) -> None:
    """Copy each run's parameters and metrics into book/results/seeds/, checking they are seed runs."""
    for folder in folders:
        found = sorted(folder.glob("*/metrics.json"))
        if not found:
            raise SystemExit(f"{folder}: no <chapter>/metrics.json inside")
        for path in found:
            chapter, run = path.parent.name, json.loads(path.read_text())
            stored = json.loads((RESULTS / f"{chapter}.json").read_text())["parameters"]
            changed = sorted(k for k in set(stored) | set(run["parameters"]) if k != "seed"
                             and json.dumps(stored.get(k)) != json.dumps(run["parameters"].get(k)))
            if changed:
                raise SystemExit(f"{path}: not a seed run of the stored {chapter} ({', '.join(changed)} differ)")
            seed = int(run["parameters"]["seed"])
            target = SEEDS / chapter / f"seed{seed}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps({"parameters": run["parameters"], "metrics": run["metrics"]},
                                         indent=1, sort_keys=True) + "\n")
            print(f"{chapter}: seed {seed} -> {target.relative_to(ROOT)}")


def derive(results: list[dict], chapter: str = "") -> dict[str, float]:
    """Tolerance per metric; a metric that some seed's run lacks (written by an older chapter) is left
    out, so the reproduction check compares it exactly, and said so on stderr."""
    spread = defaultdict(float)
    keyed = [{row_key(name): values for name, values in r["metrics"].items()} for r in results]
    missing = set()
    for row in keyed[0]:
        for metric in keyed[0][row]:
            if any(metric not in k.get(row, {}) for k in keyed):
                missing.add(metric)
                continue
            values = [k[row][metric] for k in keyed]
            spread[metric] = max(spread[metric], float(np.std(values, ddof=1)))
    for metric in sorted(missing - set(spread)):
        print(f"{chapter}: {metric} is missing from some seeds: no tolerance (compared exactly)", file=sys.stderr)
    return {m: math.ceil(FACTOR * s * 1e4) / 1e4 for m, s in sorted(spread.items())}


def main(argv: list[str]) -> None:
    if any(a.startswith("-") for a in argv):
        raise SystemExit(__doc__)
    import_runs([Path(a) for a in argv])
    path = RESULTS / "tolerances.json"
    before = json.loads(path.read_text()) if path.exists() else {}
    chapters, seeds = dict(before.get("chapters", {})), dict(before.get("seeds", {}))
    not_measured = dict(before.get("not_measured", {}))
    for stored in sorted(RESULTS.glob("[0-9][0-9]_*.json")):
        chapter = stored.stem
        results = [json.loads(stored.read_text())]
        results += [json.loads(p.read_text()) for p in sorted((SEEDS / chapter).glob("seed*.json"))]
        found = sorted({int(r["parameters"].get("seed", -1)) for r in results})
        if len(found) < 3:
            print(f"{chapter}: only seeds {found}, at least 3 are needed: kept as it was", file=sys.stderr)
            continue
        chapters[chapter], seeds[chapter] = derive(results, chapter), found
        not_measured.pop(chapter, None)
    out = {"how": HOW.format(factor=FACTOR), "seeds": seeds, "chapters": chapters}
    if not_measured:
        out["not_measured"] = not_measured
    path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    print(json.dumps(chapters, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
