"""Sweeps: the sweep file and its checks, run ids, the on-disk layout, and real runs of a tiny chapter on a
Dask LocalCluster with 2 workers (failed runs, retries, the per-run timeout, kill-and-resume, collect)."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from rankdml.sweep import chapter_parameters, collect, load_sweep, make_sweep, run_id, run_sweep, status
from rankdml.sweep import store
from rankdml.sweep.cli import main as cli
from rankdml.sweep.execute import dask_client

ROOT = Path(__file__).resolve().parents[1]
TINY = Path(__file__).parent / "fixtures" / "tiny_chapter.md"


def sweep_file(folder: Path, **spec) -> Path:
    spec = {"name": "tiny", "chapter": str(TINY), "seeds": [0], **spec}
    path = folder / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def finished(folder: Path) -> list[str]:
    return [r for r in store.recorded_run_ids(folder) if store.state(folder, r) == store.FINISHED]


# --- the sweep file -------------------------------------------------------------------------------------


def test_chapter_parameters_are_read_from_the_parameters_cell():
    assert chapter_parameters(TINY) == {"a": 1.0, "b": 2, "seed": 0, "sleep": 0.0, "fail_if_exists": "",
                                        "crash_worker": False, "output_dir": "outputs/tiny"}


def test_grid_expansion_is_the_cartesian_product_with_seeds_innermost(tmp_path):
    sweep = load_sweep(sweep_file(tmp_path, parameters={"sleep": 0.5}, grid={"a": [1.0, 2.0], "b": [1, 2, 3]},
                                  seeds=[4, 7]))
    runs = sweep.runs()
    expected = [(a, b, s) for a in (1.0, 2.0) for b in (1, 2, 3) for s in (4, 7)]
    assert [(r.parameters["a"], r.parameters["b"], r.seed) for r in runs] == expected
    assert all(r.parameters == {"sleep": 0.5, "a": r.grid_point["a"], "b": r.grid_point["b"], "seed": r.seed}
               for r in runs)
    assert len({r.run_id for r in runs}) == 12
    assert load_sweep(sweep_file(tmp_path, seeds=3)).seeds == (0, 1, 2)
    no_grid = load_sweep(sweep_file(tmp_path, seeds=[0, 1])).runs()
    assert [r.parameters for r in no_grid] == [{"seed": 0}, {"seed": 1}]


def test_chapter_path_is_looked_up_from_the_sweep_file_upwards(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "tiny.md").write_text(TINY.read_text())
    (tmp_path / "sweeps").mkdir()
    path = sweep_file(tmp_path / "sweeps", chapter="book/tiny.md")
    assert load_sweep(path).chapter == (tmp_path / "book" / "tiny.md").resolve()


def test_run_id_is_a_slug_and_a_hash_of_the_canonical_parameters():
    parameters = {"b": 2, "a": 1.0, "seed": 0}
    digest = hashlib.sha256(b'{"a":1.0,"b":2,"seed":0}').hexdigest()[:10]  # canonical JSON written by hand
    assert run_id(parameters) == f"b=2_a=1.0_seed=0-{digest}"
    assert run_id(parameters).endswith("-60031b0d1b")  # pinned: a change of the id scheme orphans every old run
    assert run_id(parameters, slug_of={"a": 1.0}) == f"a=1.0-{digest}"
    assert run_id({"seed": 0, "a": 1.0, "b": 2}).split("-")[-1] == digest  # key order does not matter
    for changed in ({"a": 1.0, "b": 2, "seed": 1}, {"a": 1, "b": 2, "seed": 0}, {"a": 1.0, "b": 2}):
        assert run_id(changed).split("-")[-1] != digest
    long = run_id({"losses": ["triplet (semi-hard)"] * 10})
    assert len(long) <= 48 + 11 and all(c.isalnum() or c in ".=-_" for c in long)


def test_the_same_sweep_gives_the_same_ids_every_time(tmp_path):
    path = sweep_file(tmp_path, grid={"a": [1.0, 3.0e-4]}, seeds=[0, 1])
    assert [r.run_id for r in load_sweep(path).runs()] == [r.run_id for r in load_sweep(path).runs()]
    assert load_sweep(path).runs()[2].run_id.startswith("a=0.0003_seed=0-")


@pytest.mark.parametrize("spec, message", [
    ({"grid": {"nope": [1]}}, r"unknown parameters \['nope'\] in `grid`.*'a', 'b'"),
    ({"parameters": {"epochs": 3}}, r"unknown parameters \['epochs'\] in `parameters`"),
    ({"parameters": {"output_dir": "x"}}, "sets output_dir"),
    ({"grid": {"seed": [0, 1]}}, "list the seeds under `seeds:`"),
    ({"parameters": {"a": 1.0}, "grid": {"a": [2.0]}}, "both fixed"),
    ({"grid": {"a": []}}, "non-empty list"),
    ({"grid": {"a": 1.0}}, "non-empty list"),
    ({"grid": [1.0]}, "`grid` is a mapping"),
    ({"grid": {"a": [1.0, 1.0]}}, "lists a value twice"),
    ({"grid": {"a": ["1e-3"]}}, r"write 1\.0e-3"),
    ({"seeds": [0, 0]}, "lists a seed twice"),
    ({"seeds": [True]}, "list of integers"),
    ({"seeds": 0}, "at least 1"),
    ({"timeout": -1}, "positive number"),
    ({"name": "a b"}, "names a folder"),
    ({"chapter": "missing.md"}, "not found"),
    ({"epochs": 3}, r"unknown keys \['epochs'\]"),
])
def test_bad_sweep_files_are_rejected(tmp_path, spec, message):
    with pytest.raises(ValueError, match=message):
        load_sweep(sweep_file(tmp_path, **spec))


def test_a_chapter_without_a_parameters_cell_or_seed_is_rejected(tmp_path):
    header = TINY.read_text().split("# A tiny")[0]
    (tmp_path / "plain.md").write_text(header + "```{code-cell} ipython3\nx = 1\n```\n")
    with pytest.raises(ValueError, match="one code cell tagged `parameters`"):
        make_sweep({"name": "x", "chapter": "plain.md", "seeds": [0]}, base=tmp_path)
    (tmp_path / "noseed.md").write_text(header + "```{code-cell} ipython3\n:tags: [parameters]\n\noutput_dir = 'o'\n```\n")
    with pytest.raises(ValueError, match="has no `seed`"):
        make_sweep({"name": "x", "chapter": "noseed.md", "seeds": [0]}, base=tmp_path)


def test_dry_run_lists_the_runs_and_runs_nothing(tmp_path, capsys):
    path = sweep_file(tmp_path, grid={"a": [1.0, 2.0]}, seeds=[0, 1])
    assert cli(["run", str(path), "--runs-dir", str(tmp_path / "runs"), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "sweep tiny: 4 runs of tiny_chapter.md"
    assert out[1].split() == ["pending", load_sweep(path).runs()[0].run_id, '{"a":', "1.0,", '"seed":', "0}"]
    assert not (tmp_path / "runs").exists()


def test_unknown_parameters_are_rejected_before_anything_runs(tmp_path, capsys):
    path = sweep_file(tmp_path, grid={"a": [1.0], "lr": [0.1]})
    runs_dir = tmp_path / "runs"
    with pytest.raises(ValueError, match=r"unknown parameters \['lr'\]"):
        run_sweep(path, runs_dir=runs_dir)
    assert cli(["run", str(path), "--runs-dir", str(runs_dir)]) == 2
    assert "unknown parameters ['lr']" in capsys.readouterr().err
    assert not runs_dir.exists()


def test_a_sweep_name_cannot_be_reused_for_another_chapter(tmp_path):
    store.write_index(tmp_path / "runs" / "tiny", {"name": "tiny", "chapter": "/elsewhere/other_chapter.md", "runs": []})
    with pytest.raises(ValueError, match="holds runs of other_chapter.md, not tiny_chapter.md"):
        run_sweep(sweep_file(tmp_path), runs_dir=tmp_path / "runs")


# --- the folder layout ------------------------------------------------------------------------------------


def test_a_run_folder_appears_whole_or_not_at_all(tmp_path, monkeypatch):
    record = {"status": "failed", "parameters": {"seed": 0}, "error": "boom"}
    store.write_run(tmp_path, "r1", record, {"metrics.json": b"{}"})
    assert store.state(tmp_path, "r1") == store.FAILED

    real_write = Path.write_bytes

    def dies_half_way(self, data):
        if self.name == "b.txt":
            raise KeyboardInterrupt  # the sweep is killed while it writes the run
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        store.write_run(tmp_path, "r2", {**record, "status": "finished"}, {"a.txt": b"a", "b.txt": b"b"})
    with pytest.raises(KeyboardInterrupt):
        store.write_run(tmp_path, "r1", {**record, "status": "finished"}, {"a.txt": b"a", "b.txt": b"b"})
    monkeypatch.undo()
    assert store.state(tmp_path, "r2") == store.PENDING and not (tmp_path / "r2").exists()
    assert store.state(tmp_path, "r1") == store.FAILED  # the old attempt is still there, untouched
    store.write_run(tmp_path, "r1", {**record, "status": "finished", "error": None}, {"a.txt": b"new"})
    assert store.state(tmp_path, "r1") == store.FINISHED
    assert sorted(p.name for p in (tmp_path / "r1").iterdir()) == ["a.txt", "parameters.json", "run.json"]
    with pytest.raises(ValueError, match="outside its folder"):
        store.write_run(tmp_path, "r3", record, {"../escape.txt": b"x"})


def test_one_sweep_at_a_time_per_folder(tmp_path):
    with store.locked(tmp_path / "s"):
        with pytest.raises(RuntimeError, match="another sweep is running"):
            with store.locked(tmp_path / "s"):
                pass


# --- real runs on a LocalCluster with 2 workers -----------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    import dask

    # A task whose worker dies fails at once (Dask's default retries it on 3 more workers).
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), dask_client(workers=2) as local:
        yield local


def test_failed_runs_are_recorded_do_not_stop_the_others_and_are_retried(tmp_path, client):
    marker = tmp_path / "fail-now"
    marker.touch()
    path = sweep_file(tmp_path, grid={"fail_if_exists": ["", str(marker)]}, seeds=[0])
    runs_dir = tmp_path / "runs"
    assert run_sweep(path, runs_dir=runs_dir, client=client, progress=False) == \
        {"total": 2, "skipped": 0, "executed": 2, "finished": 1, "failed": 1}
    folder = runs_dir / "tiny"
    good, bad = (r.run_id for r in load_sweep(path).runs())
    assert status(folder) == {"finished": [good], "failed": [bad], "pending": []}
    failure = store.read_record(folder, bad)
    assert "RuntimeError: asked to fail" in failure["error"]
    assert "raise RuntimeError" in failure["traceback"]
    assert (folder / bad / "tiny_chapter.ipynb").is_file()  # the notebook with the error in it
    ok = store.read_record(folder, good)
    assert sorted(p.name for p in (folder / good).iterdir()) == \
        ["log.txt", "metrics.json", "parameters.json", "run.json", "tiny_chapter.ipynb"]
    assert "reproducible mode: 1 threads: 2" in (folder / good / "log.txt").read_text()  # the kernel's environment
    assert ok["machine"]["dask_worker"].startswith("tcp://") and ok["seconds"] > 0

    marker.unlink()
    assert run_sweep(path, runs_dir=runs_dir, client=client, progress=False) == \
        {"total": 2, "skipped": 1, "executed": 1, "finished": 1, "failed": 0}
    assert status(folder)["finished"] == [good, bad]
    assert store.read_record(folder, good) == ok  # the finished run was not touched
    assert not (folder / store.PARTIAL).exists()


def test_on_a_scheduler_address_a_run_past_its_timeout_is_killed_and_recorded_as_failed(tmp_path, client):
    path = sweep_file(tmp_path, parameters={"sleep": 600.0}, seeds=[0], timeout=4)
    clock = time.perf_counter()
    counts = run_sweep(path, runs_dir=tmp_path / "runs", scheduler=client.scheduler.address, progress=False)
    assert counts["failed"] == 1
    assert time.perf_counter() - clock < 120
    (rid,) = store.recorded_run_ids(tmp_path / "runs" / "tiny")
    record = store.read_record(tmp_path / "runs" / "tiny", rid)
    assert record["error"].startswith("RunTimeout: timed out after 4 s") and record["timeout"] == 4
    assert record["machine"]["dask_worker"] in client.scheduler_info()["workers"]


def test_a_run_whose_worker_dies_is_recorded_as_failed(tmp_path, client):
    path = sweep_file(tmp_path, parameters={"crash_worker": True}, seeds=[0])
    counts = run_sweep(path, runs_dir=tmp_path / "runs", client=client, progress=False)
    assert counts == {"total": 1, "skipped": 0, "executed": 1, "finished": 0, "failed": 1}
    (rid,) = store.recorded_run_ids(tmp_path / "runs" / "tiny")
    assert store.read_record(tmp_path / "runs" / "tiny", rid)["error"].startswith("the Dask worker failed: KilledWorker")


# --- the command line: 2 x 2 x 2 runs, killed after 3, resumed; then collect ---------------------------------


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "rankdml.sweep", *args]


@pytest.fixture(scope="module")
def resumed_sweep(tmp_path_factory):
    """Start `run` of a 2 x 2 x 2 sweep, kill its process group while runs 4 and 5 are executing (the
    chapter's test gate holds every run after the third), then run it again to the end."""
    tmp = tmp_path_factory.mktemp("kill")
    path = sweep_file(tmp, grid={"a": [1.0, 2.0], "b": [1, 3]}, seeds=[0, 1])
    runs_dir, gate = tmp / "runs", tmp / "gate"
    gate.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "lib"), os.environ.get("PYTHONPATH", "")])}
    command = _cli("run", str(path), "--runs-dir", str(runs_dir), "--workers", "2", "--no-progress")
    first = subprocess.Popen(command, env={**env, "TINY_CHAPTER_GATE": str(gate)}, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    folder, deadline = runs_dir / "tiny", time.monotonic() + 300
    try:
        while len(list(gate.iterdir())) < 5 or len(finished(folder)) < 3:  # 3 done, 2 waiting in their kernels
            assert first.poll() is None, first.stdout.read().decode()
            assert time.monotonic() < deadline, "the sweep did not reach 3 finished runs in 5 minutes"
            time.sleep(0.2)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    after_kill = {r: store.read_record(folder, r) for r in finished(folder)}
    leftovers = []
    for _ in range(50):  # the kernels of the killed runs must go too (ipykernel exits when its parent dies)
        leftovers = [p for p in psutil.process_iter(["cmdline"]) if _gated(p, gate)]
        if not leftovers:
            break
        time.sleep(0.2)
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    return {"path": path, "runs_dir": runs_dir, "folder": folder, "after_kill": after_kill, "leftovers": leftovers,
            "second": second}


def _gated(process: psutil.Process, gate: Path) -> bool:
    try:
        return process.environ().get("TINY_CHAPTER_GATE") == str(gate)
    except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


def test_killed_sweep_resumes_with_only_the_remaining_runs(resumed_sweep):
    second, folder = resumed_sweep["second"], resumed_sweep["folder"]
    assert len(resumed_sweep["after_kill"]) == 3
    assert resumed_sweep["leftovers"] == []
    assert second.returncode == 0, second.stdout + second.stderr
    assert "8 runs; 3 already finished, 5 executed (5 finished, 0 failed); now 8 finished" in second.stdout
    assert {r: store.read_record(folder, r) for r in resumed_sweep["after_kill"]} == resumed_sweep["after_kill"]
    assert len(finished(folder)) == 8 and not (folder / store.PARTIAL).exists()
    # and once more: nothing left to do, no cluster started
    assert run_sweep(resumed_sweep["path"], runs_dir=resumed_sweep["runs_dir"], progress=False) == \
        {"total": 8, "skipped": 8, "executed": 0, "finished": 0, "failed": 0}


def test_collect_gives_one_row_per_run_and_mean_sd_over_seeds(resumed_sweep):
    runs, summary = collect("tiny", runs_dir=resumed_sweep["runs_dir"])
    assert len(runs) == 8 and set(runs["status"]) == {"finished"}
    assert list(runs.columns[:5]) == ["run_id", "status", "a", "b", "seed"]
    assert runs.attrs["metrics"] == ["cwd", "detail/seed", "score"]
    for row in runs.itertuples():
        assert row.score == pytest.approx(row.a * row.b + row.seed / 10)
    assert (runs["detail/seed"] == runs["seed"]).all() and set(runs["cwd"]) == {"fixtures"}
    assert runs["seconds"].gt(0).all()

    assert list(summary[["a", "b"]].itertuples(index=False, name=None)) == [(1.0, 1), (1.0, 3), (2.0, 1), (2.0, 3)]
    assert (summary["seeds"] == 2).all()
    for row in summary.to_dict("records"):
        scores = [row["a"] * row["b"] + seed / 10 for seed in (0, 1)]
        assert row["score mean"] == pytest.approx(statistics.mean(scores))
        assert row["score sd"] == pytest.approx(statistics.stdev(scores))  # sample sd, n - 1
        assert row["detail/seed mean"] == pytest.approx(0.5)
    assert "cwd mean" not in summary  # text is not averaged


def test_collect_and_status_commands(resumed_sweep, tmp_path, capsys):
    runs_dir = str(resumed_sweep["runs_dir"])
    csv, summary_csv = tmp_path / "runs.csv", tmp_path / "summary.csv"
    assert cli(["collect", str(resumed_sweep["path"]), "--runs-dir", runs_dir, "--csv", str(csv),
                "--summary-csv", str(summary_csv)]) == 0
    assert "8 runs (8 finished)" in capsys.readouterr().out
    assert len(pd.read_csv(csv)) == 8 and len(pd.read_csv(summary_csv)) == 4
    assert cli(["status", "tiny", "--runs-dir", runs_dir]) == 0
    assert capsys.readouterr().out == "sweep tiny: 8 runs: 8 finished, 0 failed, 0 pending\n"
    assert cli(["status", "nope", "--runs-dir", runs_dir]) == 2
    assert "no sweep 'nope'" in capsys.readouterr().err


def test_collect_marks_pending_runs_and_summarises_finished_ones_only(resumed_sweep, tmp_path, capsys):
    folder = tmp_path / "copy"
    subprocess.run(["cp", "-r", str(resumed_sweep["folder"]), str(folder)], check=True)
    index = json.loads((folder / store.SWEEP_FILE).read_text())
    first = index["runs"][0]["run_id"]
    subprocess.run(["rm", "-r", str(folder / first)], check=True)
    runs, summary = collect(folder)
    assert runs.set_index("run_id").loc[first, "status"] == "pending"
    assert pd.isna(runs.set_index("run_id").loc[first, "score"])
    assert summary["seeds"].tolist() == [1, 2, 2, 2]
    assert pd.isna(summary["score sd"].iloc[0])  # one seed: no spread to estimate

    store.write_index(folder, {**index, "chapter_sha256": "0" * 64})  # as if the chapter had been edited since
    assert cli(["status", str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sweep copy: 8 runs: 7 finished, 0 failed, 1 pending\n")
    assert "7 finished runs were made with another version of tiny_chapter.md" in out


@pytest.mark.parametrize("path", sorted((ROOT / "sweeps").glob("*.yaml")), ids=lambda p: p.stem)
def test_the_repository_sweep_files_are_valid(path):
    sweep = load_sweep(path)
    assert sweep.name == path.stem and sweep.runs()


def test_mean_sd_formats_the_summary():
    from rankdml.sweep import mean_sd

    summary = pd.DataFrame({"lr": [0.1, 0.01], "seeds": [2, 1], "recall mean": [0.51234, 0.4],
                            "recall sd": [0.0123, float("nan")]})
    assert mean_sd(summary, ["recall"]).to_dict("list") == {"lr": [0.1, 0.01], "seeds": [2, 1],
                                                            "recall": ["0.512 ± 0.012", "0.400"]}


def test_summary_without_a_grid_is_one_row_over_the_finished_seeds():
    from rankdml.sweep import summarise

    runs = pd.DataFrame({"run_id": ["r0", "r1", "r2"], "status": ["finished", "finished", "failed"],
                         "seed": [0, 1, 2], "score": [1.0, 2.0, float("nan")], "seconds": [1.0, 3.0, 9.0]})
    assert summarise(runs, [], ["score"]).to_dict("list") == {
        "seeds": [2], "score mean": [1.5], "score sd": [statistics.stdev([1.0, 2.0])],
        "seconds mean": [2.0], "seconds sd": [statistics.stdev([1.0, 3.0])]}
    empty = summarise(runs.assign(status="failed"), ["seed"], ["score"])
    assert empty.empty and list(empty.columns) == ["seed", "seeds", "score mean", "score sd", "seconds mean",
                                                   "seconds sd"]


def test_collect_reads_a_runs_selection_beside_its_metrics(tmp_path):
    # save_results(..., selection=...) writes what a sweep chooses on next to the test metrics;
    # collect puts both under the row's name (a validation curve, a list, becomes its JSON text).
    from rankdml.book import save_results

    folder = tmp_path / "runs" / "pick"
    store.write_index(folder, {"name": "pick", "chapter": str(TINY), "grid": {"lr_scale": [1.0]},
                               "runs": [{"run_id": "r1", "parameters": {"lr_scale": 1.0, "seed": 0}}]})
    out = save_results(tmp_path / "out", {"seed": 0}, {"margin": {"recall@1": 0.4}},
                       selection={"margin": {"epoch": 7, "val/recall@1": 0.55, "val/recall@1 by epoch": [0.1, 0.55]}})
    record = {"status": "finished", "error": None, "seconds": 1.0, "machine": {"hostname": "h"},
              "parameters": {"lr_scale": 1.0, "seed": 0}}
    store.write_run(folder, "r1", record, {"metrics.json": out.read_bytes()})
    row = collect(folder).runs.iloc[0]
    assert (row["margin/recall@1"], row["margin/epoch"], row["margin/val/recall@1"]) == (0.4, 7, 0.55)
    assert json.loads(row["margin/val/recall@1 by epoch"]) == [0.1, 0.55]
    assert "selection" not in json.loads(save_results(tmp_path / "plain", {}, {"a": {"b": 1}}).read_text())
