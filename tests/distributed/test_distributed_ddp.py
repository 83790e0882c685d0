"""DDP on gloo with 2 and 3 CPU processes: the global-batch loss equals one process's, to 1e-6 in float64.

One spawn of 3 processes (module-scoped fixture) runs every case with 3, then with 2 of them; see ddp_workers.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ddp_workers as W  # noqa: E402

pytestmark = pytest.mark.skipif(not torch.distributed.is_available() or not torch.distributed.is_gloo_available(),
                                reason="needs torch.distributed with gloo")


WORLDS = (3, 2)


@pytest.fixture(scope="module")
def all_runs(tmp_path_factory):
    return W.spawn(WORLDS, tmp_path_factory.mktemp("ddp"))


@pytest.fixture(scope="module", params=[2, 3], ids=["2procs", "3procs"])
def run(request, all_runs):
    return request.param, all_runs[request.param]


@pytest.fixture(scope="module")
def references():
    return {name: W.single_process_reference(name) for name in W.CASES}


def test_launch_detected_from_the_environment(run):
    world, results = run
    assert [r["info"] for r in results] == [(r, world, r) for r in range(world)]
    assert [r["is_main"] for r in results] == [True] + [False] * (world - 1)
    assert {r["backend"] for r in results} == {"gloo"}


@pytest.mark.parametrize("name", list(W.CASES))
def test_loss_and_every_gradient_equal_single_process(run, references, name):
    world, results = run
    ref = references[name]
    assert ref["grads"], "the reference has gradients"
    for r, res in enumerate(results):
        got = res["losses"][name]
        torch.testing.assert_close(got["value"], ref["value"], rtol=1e-6, atol=1e-6, msg=f"{name} rank {r} value")
        assert set(got["grads"]) == set(ref["grads"]), f"{name} rank {r}: parameters with a gradient"
        for key, g in ref["grads"].items():
            assert g.abs().max() > 0, f"{name}: reference gradient of {key} is zero, the check would be vacuous"
            torch.testing.assert_close(got["grads"][key], g, rtol=1e-6, atol=1e-6, msg=f"{name} rank {r} {key}")


def test_loss_parameters_are_broadcast_from_rank_0(run):
    world, results = run
    name = "margin_per_class_beta+distance_weighted_miner"
    init = W.CASES[name][1]()[0].beta.detach()
    for res in results:  # ranks > 0 started from β + 0.25 rank
        assert torch.equal(res["losses"][name]["loss_params"]["beta"], init)


def test_average_gradients_averages_what_differs_and_keeps_none(run):
    world, results = run
    for res in results:
        assert torch.equal(res["average"]["weight_grad"], torch.full((1, 2), (world + 1) / 2, dtype=torch.float64))
        assert res["average"]["bias_grad_is_none"]


def test_margin_beta_gets_a_gradient_and_is_compared(references):
    # the per-class β (a loss parameter outside DDP) is among the compared gradients
    assert "loss.beta" in references["margin_per_class_beta+distance_weighted_miner"]["grads"]
    assert "loss.beta" in references["margin+distance_weighted"]["grads"]


@pytest.mark.parametrize("name", ["contrastive", "npairs"])
def test_gathered_batch_is_the_single_process_batch_in_rank_order(run, name):
    world, results = run
    K = W.CASES[name][0]
    expected = torch.tensor(W.global_batch(K))
    shares = torch.cat([res["losses"][name]["local_indices"] for res in results])
    assert torch.equal(shares, expected)
    for res in results:
        assert torch.equal(res["losses"][name]["gathered_indices"], expected)


def test_two_epochs_of_training_equal_single_process(run):
    # DataLoader + DistributedPKSampler + DDP + GlobalBatchLoss + SGD with momentum on the model and β
    world, results = run
    ref = W.train_two_epochs()
    assert len(ref["values"]) >= 4
    start = W.Net().fc.weight.detach()
    assert not torch.allclose(ref["params"]["model.fc.weight"], start)  # training moved the weights
    for r, res in enumerate(results):
        got = res["training"]
        torch.testing.assert_close(torch.tensor(got["values"]), torch.tensor(ref["values"]), rtol=1e-6, atol=1e-6)
        for key, value in ref["params"].items():
            torch.testing.assert_close(got["params"][key], value, rtol=1e-6, atol=1e-6, msg=f"rank {r} {key}")


def test_gather_forward_uneven_shards(run):
    world, results = run
    full = torch.randn(sum(range(1, world + 1)), 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for res in results:
        assert torch.equal(res["gather"]["gathered"], full)


def test_gather_backward_sums_every_ranks_gradient_of_its_own_slice(run):
    # each rank differentiates a different function of the gathered tensor; rank r's slice must
    # receive the sum over ranks, as single-process autograd of the sum gives
    world, results = run
    for r, res in enumerate(results):
        torch.testing.assert_close(res["gather"]["grad_uneven"], W.expected_gather_grad(world, r),
                                   rtol=1e-12, atol=1e-12)


def test_gather_backward_agrees_with_torch_distributed_nn(run):
    world, results = run
    for r, res in enumerate(results):
        torch.testing.assert_close(res["gather"]["grad_ours_equal"], res["gather"]["grad_torch_equal"],
                                   rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(res["gather"]["grad_ours_equal"], W.expected_equal_grad(world, r),
                                   rtol=1e-12, atol=1e-12)


def test_eval_gather_on_rank_0_only_sorted_and_deduplicated(run):
    world, results = run
    emb, labels = results[0]["eval"]["expected"]
    torch.testing.assert_close(results[0]["eval"]["emb"], emb, rtol=0, atol=0)
    assert torch.equal(results[0]["eval"]["labels"], labels)
    torch.testing.assert_close(results[0]["eval"]["emb_rank_order"], emb, rtol=0, atol=0)
    for res in results[1:]:
        assert res["eval"]["emb"] is None and res["eval"]["labels"] is None and res["eval"]["emb_rank_order"] is None
    shards = [res["eval"]["shard"] for res in results]
    assert shards[0][0] == 0 and shards[-1][1] == emb.shape[0]
    assert all(a[1] == b[0] for a, b in zip(shards, shards[1:]))
    assert max(b - a for a, b in shards) - min(b - a for a, b in shards) <= 1


def test_ranks_that_disagree_all_get_a_value_error(run):
    world, results = run
    for res in results:
        assert "disagree on the embedding size" in res["errors"]["dims"]
        assert "batch_indices everywhere or nowhere" in res["errors"]["indices"]
        assert "disagree on the embedding size, on passing batch_indices or on the dtype" in res["errors"]["dtype"]


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2
                    or not torch.distributed.is_nccl_available(),
                    reason="NCCL needs one GPU per process: at least 2 GPUs")
def test_nccl_on_every_gpu_equals_single_process(tmp_path, references):
    world = 3 if torch.cuda.device_count() >= 3 else 2  # P = 6 classes split over the ranks
    results = W.spawn((world,), tmp_path, backend="nccl")[world]
    assert {r["backend"] for r in results} == {"nccl"}
    assert [r["device"] for r in results] == [f"cuda:{r}" for r in range(world)]
    for name, ref in references.items():
        for r, res in enumerate(results):
            got = res["losses"][name]
            torch.testing.assert_close(got["value"], ref["value"], rtol=1e-6, atol=1e-6, msg=f"{name} rank {r}")
            for key, g in ref["grads"].items():
                torch.testing.assert_close(got["grads"][key], g, rtol=1e-6, atol=1e-6, msg=f"{name} rank {r} {key}")
    ref = W.train_two_epochs()
    for r, res in enumerate(results):
        torch.testing.assert_close(res["gather"]["grad_uneven"], W.expected_gather_grad(world, r))
        for key, value in ref["params"].items():
            torch.testing.assert_close(res["training"]["params"][key], value, rtol=1e-6, atol=1e-6)
