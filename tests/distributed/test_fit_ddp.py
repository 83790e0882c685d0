"""`rankdml.train.fit` on 2 and 3 gloo processes equals one process on the same global batches.

Checks: the History (losses and validation metrics of every epoch) and the final parameters equal a
single-process fit to 1e-6 in float64; every rank holds the same History, seconds included; the
callbacks see the global batch; `rank_zero_only` callbacks run on rank 0 only; a run crashed
mid-epoch and resumed from its checkpoint equals the uninterrupted run; unsharded samplers and
methods without multi-process support are refused with a clear message.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fit_workers as F  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")

WORLDS = (3, 2)


@pytest.fixture(scope="module")
def all_runs(tmp_path_factory):
    return F.spawn(WORLDS, tmp_path_factory.mktemp("fit_ddp"))


@pytest.fixture(scope="module", params=[2, 3], ids=["2procs", "3procs"])
def run(request, all_runs):
    results = all_runs[request.param]
    for r, res in enumerate(results):
        assert "traceback" not in res, f"rank {r} failed:\n{res['traceback']}"
    return request.param, results


@pytest.fixture(scope="module")
def reference():
    return F.single_process_reference()


def without_seconds(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def assert_same_run(got, ref, what):
    assert [sorted(r) for r in got["records"]] == [sorted(r) for r in ref["records"]], f"{what}: recorded keys"
    for g, e in zip(without_seconds(got["records"]), without_seconds(ref["records"])):
        for key in e:
            assert g[key] == pytest.approx(e[key], rel=1e-6, abs=1e-6), f"{what}: epoch {e['epoch']} {key}"
    for key, value in ref["params"].items():
        torch.testing.assert_close(got["params"][key], value, rtol=1e-6, atol=1e-6, msg=f"{what}: {key}")


def test_history_and_parameters_equal_one_process(run, reference):
    world, results = run
    assert len(reference["records"]) == F.EPOCHS + 1 and "val/recall@1" in reference["records"][-1]
    moved = reference["params"]["model.fc.weight"] - F.W.Net().fc.weight.detach()
    assert moved.abs().max() > 1e-3, "training must move the weights, or the comparison is vacuous"
    for r, res in enumerate(results):
        assert_same_run(res["fit"], reference, f"{world} processes, rank {r}")


def test_every_rank_has_the_same_history(run):
    _, results = run
    for res in results[1:]:
        assert res["fit"]["records"] == results[0]["fit"]["records"]  # seconds too: rank 0's record


def test_callbacks_see_the_global_batch(run, reference):
    _, results = run
    for res in results:
        assert res["batches"] == reference["batches"]
        assert all(len(b) == F.W.P * 3 for b in res["batches"])
        assert res["epoch_ends"] == F.EPOCHS


def test_rank_zero_only_callbacks(run, reference):
    _, results = run
    assert results[0]["rank_zero_steps"] == len(reference["batches"])
    assert all(res["rank_zero_steps"] == 0 for res in results[1:])


def test_resume_after_a_crash_equals_the_uninterrupted_run(run):
    world, results = run
    for r, res in enumerate(results):
        assert res["crashed"], "the crash callback must interrupt the first run"
        assert_same_run(res["resumed"], res["fit"], f"{world} processes, rank {r}, resumed")


def test_refused_on_several_processes(run):
    _, results = run
    for res in results:
        assert "not sharded between them" in res["errors"]["unsharded"]
        assert "DistributedPKSampler" in res["errors"]["unsharded"]
        assert "PADS" in res["errors"]["pads"] and "does not support training on several processes" in \
            res["errors"]["pads"]
