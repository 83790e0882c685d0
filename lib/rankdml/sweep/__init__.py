"""Sweeps: a chapter executed with papermill over a grid of parameters and seeds, on Dask.

    python -m rankdml.sweep run sweeps/ch2-seeds.yaml [--workers 2 | --scheduler tcp://host:8786]
    python -m rankdml.sweep status ch2-seeds
    python -m rankdml.sweep collect ch2-seeds --csv results.csv

`spec` reads and checks the sweep file and gives each run its id, `runner` executes one run (on a
Dask worker), `store` is the on-disk layout (`runs/<name>/<run-id>/`), `execute` submits the runs to
Dask, `collect` reads the results back into pandas. Dask and pandas are imported only when used.
"""
from rankdml.sweep.collect import SweepResults, collect, mean_sd, status, summarise
from rankdml.sweep.execute import run_sweep
from rankdml.sweep.runner import execute_chapter, stabilise
from rankdml.sweep.spec import Run, Sweep, chapter_parameters, load_sweep, make_sweep, run_id

__all__ = ["Run", "Sweep", "SweepResults", "chapter_parameters", "collect", "execute_chapter", "load_sweep",
           "make_sweep", "mean_sd", "run_id", "run_sweep", "stabilise", "status", "summarise"]
