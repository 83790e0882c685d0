"""Shared by test_fit_ddp.py: `rankdml.train.fit` itself on 2 and 3 spawned gloo processes.

Each rank saves what it saw to `<out>/fit_world<w>_rank<r>.pt`; the test compares the ranks with one
another and with a single-process `fit` on the same global batches. The model has no BatchNorm, so
the single-process run is the exact reference (float64, one thread per process).
"""
from __future__ import annotations

import traceback
from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset

import ddp_workers as W
from rankdml.callbacks import Callback
from rankdml.data import DistributedPKSampler, PKSampler
from rankdml.losses import MarginLoss
from rankdml.train import fit

EPOCHS, CRASH_AT = 2, 5


class Recorder(Callback):
    """Records the global batch each step sees (its size and dataset indices) and the epochs' ends."""

    def __init__(self):
        self.batches, self.epoch_ends = [], 0

    def on_step_end(self, state):
        self.batches.append(state.batch_indices.tolist())

    def on_epoch_end(self, state, record):
        self.epoch_ends += 1


class RankZeroCounter(Callback):
    rank_zero_only = True

    def __init__(self):
        self.steps = 0

    def on_step_end(self, state):
        self.steps += 1


class Crash(Callback):
    """Stands in for a killed job: raises on every rank after step `at`."""

    def __init__(self, at: int):
        self._at = at  # private: not part of the configuration a checkpoint checks

    def on_step_end(self, state):
        if state.step == self._at:
            raise KeyboardInterrupt(f"crash after step {self._at}")


def run_fit(distributed: bool, *, checkpoint_dir=None, callbacks=(), eval_sets=True):
    """Two epochs of fit: SGD with momentum, per-class β, distance-weighted sampling, validation every epoch."""
    x, labels = W.dataset()
    pk = PKSampler(labels.numpy(), W.P, 3, seed=3)
    batches = DistributedPKSampler(pk) if distributed else pk
    loader = DataLoader(TensorDataset(x, labels, torch.arange(len(labels))), batch_sampler=batches)
    model = W.Net()
    loss = MarginLoss(num_classes=W.NUM_CLASSES, beta=0.9, sampler=W._dws(21))
    optimizer = torch.optim.SGD(list(model.parameters()) + list(loss.parameters()), lr=0.5, momentum=0.9)
    history = fit(model, loss, loader, epochs=EPOCHS, optimizer=optimizer, device="cpu", progress=False,
                  eval_sets={"val": TensorDataset(x, labels)} if eval_sets else None, ks=(1, 2), nmi=False,
                  checkpoint_dir=checkpoint_dir, checkpoint_every_steps=2 if checkpoint_dir else None,
                  callbacks=list(callbacks))
    params = {f"model.{n}": q.detach().clone() for n, q in model.named_parameters()}
    params.update({f"loss.{n}": q.detach().clone() for n, q in loss.named_parameters()})
    return {"records": history.records, "params": params}


def single_process_reference() -> dict:
    recorder = Recorder()
    out = run_fit(False, callbacks=[recorder])
    out["batches"] = recorder.batches
    return out


def worker(rank: int, worlds: tuple[int, ...], ports: list[int], out: str) -> None:
    torch.set_num_threads(1)
    for world, port in zip(worlds, ports):
        if rank < world:
            _run_world(rank, world, port, out)


def _run_world(rank: int, world: int, port: int, out: str) -> None:
    rd, _ = W._init(rank, world, port, "gloo")
    results: dict = {}
    try:
        recorder, counter = Recorder(), RankZeroCounter()
        results["fit"] = run_fit(True, callbacks=[recorder, counter])
        results["batches"], results["epoch_ends"], results["rank_zero_steps"] = (
            recorder.batches, recorder.epoch_ends, counter.steps)
        ckpt = Path(out) / f"ckpt_world{world}"
        try:
            run_fit(True, checkpoint_dir=ckpt, callbacks=[Crash(CRASH_AT)])
            results["crashed"] = False
        except KeyboardInterrupt:
            results["crashed"] = True
        rd.barrier()
        results["resumed"] = run_fit(True, checkpoint_dir=ckpt, callbacks=[Crash(-1)])
        results["errors"] = _errors()
        rd.barrier()
    except Exception:  # keep the traceback: spawn only reports the exception type of one rank
        results["traceback"] = traceback.format_exc()
        raise
    finally:
        torch.save(results, Path(out) / f"fit_world{world}_rank{rank}.pt")
        rd.shutdown()


def _errors() -> dict:
    """The messages fit gives for what cannot run on several processes (raised before any collective)."""
    from rankdml.pads.callback import PADS

    x, labels = W.dataset()
    data = TensorDataset(x, labels)
    model, loss = W.Net(), MarginLoss(beta=0.9)
    messages = {}
    cases = {"unsharded": dict(loader=DataLoader(data, batch_sampler=PKSampler(labels.numpy(), W.P, 3, seed=3))),
             "pads": dict(loader=DataLoader(data, batch_sampler=DistributedPKSampler(PKSampler(labels.numpy(), W.P,
                                                                                               3, seed=3))),
                          callbacks=[PADS.__new__(PADS)])}
    for name, kwargs in cases.items():
        try:
            fit(model, loss, kwargs["loader"], epochs=1, device="cpu", progress=False,
                callbacks=kwargs.get("callbacks", ()))
            messages[name] = None
        except ValueError as err:
            messages[name] = str(err)
    return messages


def spawn(worlds: tuple[int, ...], out: Path) -> dict[int, list[dict]]:
    ports = [W.free_port() for _ in worlds]
    torch.multiprocessing.spawn(worker, args=(tuple(worlds), ports, str(out)), nprocs=max(worlds), join=True)
    return {w: [torch.load(out / f"fit_world{w}_rank{r}.pt", weights_only=False) for r in range(w)] for w in worlds}
