"""Command line of the sweeps.

    python -m rankdml.sweep run SWEEP.yaml [--workers N | --scheduler tcp://HOST:PORT] [--timeout S] [--runs-dir DIR]
                                           [--dry-run]
    python -m rankdml.sweep status NAME [--runs-dir DIR]
    python -m rankdml.sweep collect NAME [--csv FILE] [--summary-csv FILE] [--runs-dir DIR]

`run` executes the runs not finished yet (re-running it resumes a killed sweep and retries failed
runs); it exits with 1 when a run of the sweep has failed. NAME is the sweep's `name`, its folder or
its YAML file. Bad input exits with 2 and says what to change.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rankdml.sweep import store


def _run(args: argparse.Namespace) -> int:
    from rankdml.sweep.collect import status
    from rankdml.sweep.execute import run_sweep
    from rankdml.sweep.spec import load_sweep

    sweep = load_sweep(args.sweep)  # checked before any worker starts
    runs_dir = Path(args.runs_dir or store.default_runs_dir())
    if args.dry_run:
        runs = sweep.runs()
        print(f"sweep {sweep.name}: {len(runs)} runs of {sweep.chapter.name}")
        for run in runs:
            print(f"{store.state(runs_dir / sweep.name, run.run_id):9} {run.run_id}  {json.dumps(run.parameters)}")
        return 0
    counts = run_sweep(sweep, runs_dir=runs_dir, workers=args.workers, scheduler=args.scheduler,
                       timeout=args.timeout, progress=not args.no_progress)
    states = status(runs_dir / sweep.name)
    print(f"sweep {sweep.name}: {counts['total']} runs; {counts['skipped']} already finished, "
          f"{counts['executed']} executed ({counts['finished']} finished, {counts['failed']} failed); "
          f"now {len(states['finished'])} finished, {len(states['failed'])} failed, "
          f"{len(states['pending'])} pending -> {runs_dir / sweep.name}")
    return 1 if states["failed"] or states["pending"] else 0


def _status(args: argparse.Namespace) -> int:
    from rankdml.sweep.collect import status, sweep_folder

    folder = sweep_folder(args.name, args.runs_dir)
    states = status(folder)
    total = sum(map(len, states.values()))
    print(f"sweep {folder.name}: {total} runs: " + ", ".join(f"{len(ids)} {state}" for state, ids in states.items()))
    for run_id in states["failed"]:
        print(f"  failed {run_id}: {store.read_record(folder, run_id).get('error')}")
    index = store.read_index(folder)
    stale = [r for r in states["finished"] if store.read_record(folder, r).get("chapter_sha256") != index["chapter_sha256"]]
    if stale:
        print(f"  {len(stale)} finished runs were made with another version of {Path(index['chapter']).name}; "
              f"delete their folders to run them again")
    older = sorted(set(store.recorded_run_ids(folder)) - {r for ids in states.values() for r in ids})
    if older:
        print(f"  {len(older)} other run folders are from an earlier version of the sweep file (not counted)")
    return 0


def _collect(args: argparse.Namespace) -> int:
    import pandas as pd

    from rankdml.sweep.collect import collect

    runs, summary = collect(args.name, args.runs_dir)
    if args.csv:
        runs.to_csv(args.csv, index=False)
    if args.summary_csv:
        summary.to_csv(args.summary_csv, index=False)
    with pd.option_context("display.max_columns", 50, "display.width", 160):
        print(summary.to_string(index=False))
    counts = runs["status"].value_counts().to_dict()
    print(f"{len(runs)} runs ({', '.join(f'{n} {s}' for s, n in counts.items())})"
          + (f"; rows written to {args.csv}" if args.csv else "")
          + (f"; summary written to {args.summary_csv}" if args.summary_csv else ""))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rankdml.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="execute the sweep's runs that have not finished")
    run.add_argument("sweep", type=Path, help="the sweep file (YAML)")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, default=2, help="local Dask worker processes (default 2)")
    where.add_argument("--scheduler", default=None, help="address of a running Dask scheduler, tcp://host:port")
    run.add_argument("--timeout", type=float, default=None, help="seconds per run (overrides the sweep file)")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--dry-run", action="store_true", help="list the runs, their ids and states; run nothing")
    for name, text in (("status", "count finished, failed and pending runs"),
                       ("collect", "print the per-grid-point summary, write the tables as CSV")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("name", help="the sweep's name, folder or YAML file")
        if name == "collect":
            sub.add_argument("--csv", type=Path, default=None, help="write one row per run here")
            sub.add_argument("--summary-csv", type=Path, default=None, help="write the mean and sd per grid point here")
    for sub in commands.choices.values():
        sub.add_argument("--runs-dir", type=Path, default=None, help="where sweeps live (default: runs/ of the repository)")
    args = parser.parse_args(argv)
    try:
        return {"run": _run, "status": _status, "collect": _collect}[args.command](args)
    except (ValueError, RuntimeError) as err:  # bad input, or the sweep's folder is in use
        print(f"error: {err}", file=sys.stderr)
        return 2
