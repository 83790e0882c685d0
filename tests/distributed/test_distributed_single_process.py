"""rankdml.distributed in a single process: launch parsing, device choice, identity gathers, bad input."""
from __future__ import annotations

import pytest
import torch

from rankdml import distributed as rd
from rankdml.losses import MarginLoss, TripletLoss
from rankdml.mining import BatchHardMiner


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_plain_python_run_is_rank_0_of_1(clean_env):
    info = rd.launch_info()
    assert info == rd.LaunchInfo(0, 1, 0) and not info.launched
    assert rd.init() == info and not torch.distributed.is_initialized()
    assert rd.rank() == 0 and rd.world_size() == 1 and rd.is_main() and not rd.is_distributed()
    rd.barrier()  # no-op
    rd.shutdown()  # no-op


def test_torchrun_environment_is_read(clean_env):
    clean_env.setenv("RANK", "3")
    clean_env.setenv("WORLD_SIZE", "4")
    clean_env.setenv("LOCAL_RANK", "1")
    info = rd.launch_info()
    assert info == rd.LaunchInfo(3, 4, 1) and info.launched


@pytest.mark.parametrize("env,match", [({"RANK": "4", "WORLD_SIZE": "4"}, "RANK < WORLD_SIZE"),
                                       ({"WORLD_SIZE": "two"}, "integer")])
def test_inconsistent_environment_raises(clean_env, env, match):
    for k, v in env.items():
        clean_env.setenv(k, v)
    with pytest.raises(ValueError, match=match):
        rd.launch_info()


def test_init_without_master_address_raises(clean_env):
    clean_env.setenv("RANK", "0")
    clean_env.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="MASTER_ADDR"):
        rd.init(backend="gloo")


def test_unknown_backend_raises(clean_env):
    clean_env.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="unknown backend"):
        rd.init(backend="mpi-ish")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU fallback")
def test_device_is_cpu_without_cuda_and_nccl_refused(clean_env):
    assert rd.device_for_rank(1) == torch.device("cpu")
    clean_env.setenv("WORLD_SIZE", "2")
    with pytest.raises(ValueError, match="needs CUDA"):
        rd.init(backend="nccl")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_device_is_cuda_local_rank():
    assert rd.device_for_rank(0) == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="nproc_per_node"):
        rd.device_for_rank(torch.cuda.device_count())


def test_gathers_are_identities_in_one_process():
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    idx = torch.tensor([5, 3, 4, 0, 1, 2])
    assert rd.all_gather_with_grad(x) is x
    e, lab, i = rd.gather_batch(x, y, idx)
    assert e is x and lab is y and i is idx
    e, lab = rd.gather_embeddings_for_eval(x, y, idx)
    order = torch.argsort(idx)
    assert torch.equal(e, x.detach()[order]) and torch.equal(lab, y[order])
    assert list(rd.eval_shard(7)) == list(range(7))


def test_global_batch_loss_equals_the_loss_in_one_process():
    torch.manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(8, 4, dtype=torch.float64), dim=1).requires_grad_()
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    wrapped = rd.GlobalBatchLoss(TripletLoss(), miner=BatchHardMiner())
    direct = TripletLoss()(x, y, indices=BatchHardMiner()(x, y))
    assert torch.equal(wrapped(x, y), direct)
    assert wrapped.last_batch[0].requires_grad is False and wrapped.last_batch[2] is None
    margin = rd.GlobalBatchLoss(MarginLoss())
    margin(x, y).backward()
    before = margin.loss.beta.grad.clone()
    margin.average_gradients()  # no-op in one process
    assert torch.equal(margin.loss.beta.grad, before)
    assert [n for n, _ in margin.named_parameters()] == ["loss.beta"]  # optimisers see β through the wrapper


@pytest.mark.parametrize("bad,match", [
    (lambda x, y: (x[0], y, None), r"shape \(B, D\)"),
    (lambda x, y: (x, y[:3], None), "disagree on the batch size"),
    (lambda x, y: (x, y, torch.arange(3)), "batch_indices of shape"),
    (lambda x, y: (x, y, torch.zeros(6)), "integer batch_indices"),
    (lambda x, y: (x * float("nan"), y, None), "NaN"),
])
def test_gather_batch_bad_input(bad, match):
    x, y = torch.randn(6, 3), torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match=match):
        rd.gather_batch(*bad(x, y))


def test_global_batch_loss_refuses_a_non_callable():
    with pytest.raises(ValueError, match="loss module"):
        rd.GlobalBatchLoss(3)
