"""The pieces together in a hand-written loop (the shape of `fit` with callbacks): index, sampler,
loss through batch indices, refresh callback, accuracies."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, TensorDataset

from rankdml import accuracy as A
from rankdml.callbacks import TrainState
from rankdml.clusters import ClusterIndex, ClusterRefresh
from rankdml.data import MagnetSampler
from rankdml.losses import MagnetLoss, RepMetLoss


def _toy(seed=0):
    # 3 classes, each made of 2 well separated modes in 2-D (multi-modal classes), 20 points per mode
    g = torch.Generator().manual_seed(seed)
    modes = torch.tensor([[0.0, 0.0], [6.0, 6.0], [6.0, 0.0], [0.0, 6.0], [3.0, 9.0], [9.0, 3.0]])
    mode = torch.arange(6).repeat_interleave(20)
    x = modes[mode] + 0.4 * torch.randn(120, 2, generator=g)
    return x, mode // 2


def _run(loss_fn, index, x, y, steps=24, every=8, init_reps=False):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    sampler = MagnetSampler(index, 4, 4, seed=0, num_batches=steps)
    loader = DataLoader(TensorDataset(x, y, torch.arange(len(y))), batch_sampler=sampler)
    opt = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=1e-2)
    cb = ClusterRefresh(index, TensorDataset(x, y), every=every, sampler=sampler, init_representatives=init_reps)
    state = TrainState(model=model, loss=loss_fn, optimizer=opt, device=torch.device("cpu"), loader=loader,
                       steps_per_epoch=steps, total_steps=steps)
    cb.on_fit_start(state)
    values = []
    for xb, yb, ib in loader:
        emb = model(xb)
        kwargs = {"batch_indices": ib} if getattr(loss_fn, "needs_batch_indices", False) else {}
        value = loss_fn(emb, yb, **kwargs)
        opt.zero_grad()
        value.backward()
        opt.step()
        values.append(value.item())
        state.step += 1
        state.embeddings, state.labels, state.batch_indices = emb.detach(), yb, ib
        cb.on_step_end(state)
    return model, cb, values


def test_magnet_end_to_end():
    x, y = _toy()
    index = ClusterIndex(y, 2)
    loss = MagnetLoss(index=index)
    model, cb, values = _run(loss, index, x, y)
    assert cb.refresh_steps == [0, 8, 16, 24]
    assert all(torch.isfinite(torch.tensor(values)))
    assert index.has_loss.any() and loss.num_batches.item() == 24 and loss.running_variance.item() > 0
    with torch.no_grad():
        emb = model(x)
    for fn in (A.simple_accuracy, lambda *a: A.magnet_accuracy(*a, loss.running_variance.item())):
        acc = fn(emb, y, index.centres, index.cluster_labels)
        assert 0.0 <= acc <= 1.0
    # the checkpointable state of the callback carries the sampler's generator
    assert cb.state_dict()["sampler"]["generator"].dtype == torch.uint8


def test_repmet_end_to_end_with_kmeans_initialisation():
    x, y = _toy(1)
    index = ClusterIndex(y, 2)
    loss = RepMetLoss(3, 2, 4, variant="v1")
    model, cb, values = _run(loss, index, x, y, every=None, init_reps=True)
    assert cb.refresh_steps == [0]
    assert all(torch.isfinite(torch.tensor(values)))
    with torch.no_grad():
        acc = A.repmet_accuracy(model(x), y, loss.current_representatives(), loss.representative_labels, loss.sigma)
    assert 0.0 <= acc <= 1.0


def _parts(x, y):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 4))
    index = ClusterIndex(y, 2)
    loss = MagnetLoss(index=index)
    sampler = MagnetSampler(index, 4, 4, seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    cb = ClusterRefresh(index, TensorDataset(x, y), every=4, sampler=sampler)
    state = TrainState(model=model, loss=loss, optimizer=opt, device=torch.device("cpu"), loader=None,
                       steps_per_epoch=12, total_steps=12)
    return model, loss, sampler, opt, cb, state


def _steps(parts, x, y, n):
    model, loss, sampler, opt, cb, state = parts
    values = []
    for _ in range(n):
        ib = torch.tensor(sampler.sample_batch())
        emb = model(x[ib])
        value = loss(emb, y[ib], batch_indices=ib)
        opt.zero_grad()
        value.backward()
        opt.step()
        values.append(value.item())
        state.step += 1
        state.batch_indices = ib
        cb.on_step_end(state)
    return values


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run():
    import io

    x, y = _toy(2)
    parts = _parts(x, y)
    parts[4].on_fit_start(parts[5])
    want = _steps(parts, x, y, 12)

    parts = _parts(x, y)
    parts[4].on_fit_start(parts[5])
    first = _steps(parts, x, y, 6)
    model, loss, sampler, opt, cb, state = parts
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "loss": loss.state_dict(),
                "callback": cb.state_dict(), "rng": torch.get_rng_state(), "step": state.step}, buffer)
    buffer.seek(0)
    ckpt = torch.load(buffer, weights_only=True)  # only tensors, numbers, lists and dicts

    torch.manual_seed(12345)  # a fresh process: other RNG state, unfitted index
    parts = _parts(x, y)
    model, loss, sampler, opt, cb, state = parts
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["opt"])
    loss.load_state_dict(ckpt["loss"])
    cb.load_state_dict(ckpt["callback"])
    torch.set_rng_state(ckpt["rng"])
    state.step = ckpt["step"]
    cb.on_fit_start(state)  # the index is restored: no refresh here
    rest = _steps(parts, x, y, 6)
    assert first + rest == want
    assert cb.refresh_steps == [0, 4, 8, 12]
