"""Per-class k-means, the cluster index (losses, seed probabilities, checkpoint state) and the refresh callback."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from rankdml.callbacks import Callback, TrainState
from rankdml.clusters import ClusterIndex, ClusterRefresh, per_class_kmeans
from rankdml.losses import MagnetLoss, RepMetLoss

from .conftest import clustered_batch


def _blobs(C=3, K=2, n=8, dim=4, seed=0, spread=0.05):
    x, y, c = clustered_batch(C, K, n, dim=dim, seed=seed, spread=spread)
    return x.float(), y, c


def test_per_class_kmeans_recovers_separated_blobs():
    x, y, truth = _blobs()
    centres, assign, classes = per_class_kmeans(x, y, 2, seed=0)
    assert classes.tolist() == [1, 3, 5] and centres.shape == (6, 4) and assign.shape == y.shape
    # every item is in a cluster of its own class (class-major numbering) ...
    assert torch.equal(classes.repeat_interleave(2)[assign], y)
    # ... at its nearest own-class centre ...
    d = ((x[:, None, :] - centres[None]) ** 2).sum(2)
    d[classes.repeat_interleave(2)[None, :] != y[:, None]] = float("inf")
    assert torch.equal(d.argmin(1), assign)
    # ... and the partition is the true one (blobs far apart relative to their spread)
    pairs_same = truth[:, None] == truth[None, :]
    assert torch.equal(assign[:, None] == assign[None, :], pairs_same)
    # seeded: the same result twice
    c2, a2, _ = per_class_kmeans(x, y, 2, seed=0)
    assert torch.equal(c2, centres) and torch.equal(a2, assign)


def test_per_class_kmeans_k1_is_the_class_mean():
    x, y, _ = _blobs(seed=1, spread=1.0)
    centres, assign, classes = per_class_kmeans(x.double(), y, 1)
    for i, c in enumerate(classes):
        assert torch.allclose(centres[i].double(), x[y == c].double().mean(0), atol=1e-6)
    assert torch.equal(classes[assign], y)


def test_k_larger_than_a_class_is_an_error():
    y = torch.tensor([0] * 5 + [1] * 2 + [2] * 4)
    x = torch.randn(len(y), 3)
    with pytest.raises(ValueError, match="class 1 has only 2 items"):
        per_class_kmeans(x, y, 3)
    with pytest.raises(ValueError, match="class 1 has only 2 items"):
        ClusterIndex(y, 3)
    with pytest.raises(ValueError, match="k"):
        ClusterIndex(y, 0)
    with pytest.raises(ValueError, match="NaN"):
        per_class_kmeans(x.fill_(float("nan")), y, 1)


def test_index_losses_and_seed_probabilities():
    x, y, _ = _blobs(C=2, K=2, n=4)
    index = ClusterIndex(y, 2).fit(x)
    p = index.seed_probabilities()
    assert torch.allclose(p, torch.full((4,), 0.25))  # uniform before any loss
    members = [torch.nonzero(index.assignments == c).flatten() for c in range(4)]
    # cluster 0: items with losses 1 and 3 (mean 2); cluster 1: one item, loss exactly 0 (must count as a loss)
    index.update_losses(torch.stack([members[0][0], members[0][1], members[1][0]]), torch.tensor([1.0, 3.0, 0.0]))
    cl = index.cluster_losses()
    assert cl[0].item() == 2.0 and cl[1].item() == 0.0
    assert cl[2].item() == pytest.approx(1.0) and cl[3].item() == pytest.approx(1.0)  # unseen: mean of the seen
    p = index.seed_probabilities()
    assert torch.allclose(p, torch.tensor([2.0, 0.0, 1.0, 1.0]) / 4)
    # an item drawn twice in a batch gets the mean of its two losses; a later batch overwrites it
    i = members[2][0]
    index.update_losses(torch.stack([i, i]), torch.tensor([4.0, 6.0]))
    assert index.item_losses[i].item() == 5.0
    # all losses zero: uniform, never NaN
    index.update_losses(torch.arange(len(y)), torch.zeros(len(y)))
    p = index.seed_probabilities()
    assert torch.isfinite(p).all() and torch.allclose(p, torch.full((4,), 0.25))
    with pytest.raises(ValueError, match="NaN"):
        index.update_losses(torch.tensor([0]), torch.tensor([float("nan")]))
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        index.update_losses(torch.tensor([16]), torch.tensor([1.0]))


def test_empty_cluster_is_never_a_seed():
    x, y, _ = _blobs(C=2, K=2, n=4)
    index = ClusterIndex(y, 2).fit(x)
    index.assignments[index.assignments == 1] = 0  # empty cluster 1 by hand
    p = index.seed_probabilities()
    assert p[1] == 0 and p.sum().item() == pytest.approx(1.0)


def test_index_state_dict_round_trip_and_mismatch():
    x, y, _ = _blobs()
    index = ClusterIndex(y, 2).fit(x)
    index.update_losses(torch.arange(5), torch.arange(5).float())
    state = index.state_dict()
    other = ClusterIndex(y, 2)
    assert not other.fitted
    other.load_state_dict(state)
    assert torch.equal(other.centres, index.centres) and torch.equal(other.assignments, index.assignments)
    assert torch.equal(other.cluster_losses(), index.cluster_losses()) and other.refreshes == 1
    with pytest.raises(ValueError, match="other labels or another k"):
        ClusterIndex(y, 3).load_state_dict(state)
    # checkpoint-safe: only tensors and numbers
    buffer = __import__("io").BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    assert torch.equal(torch.load(buffer, weights_only=True)["assignments"], index.assignments)


class _Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x):
        return x * self.scale


def _state(model, loss, step=0, batch_indices=None):
    return TrainState(model=model, loss=loss, optimizer=None, device=torch.device("cpu"), loader=None,
                      steps_per_epoch=10, total_steps=100, step=step, batch_indices=batch_indices)


def test_refresh_on_schedule_and_feeds_losses():
    x, y, _ = _blobs(C=3, K=2, n=6, spread=0.3)
    index = ClusterIndex(y, 2)
    loss = MagnetLoss(index=index)
    model = _Model()
    cb = ClusterRefresh(index, TensorDataset(x, y), every=3, at_steps=(1,))
    assert isinstance(cb, Callback)
    state = _state(model, loss)
    cb.on_fit_start(state)
    assert index.fitted and cb.refresh_steps == [0]
    cb.on_fit_start(state)  # already fitted: no second refresh
    assert cb.refresh_steps == [0]
    g = torch.Generator().manual_seed(0)
    for step in range(1, 8):
        bi = torch.randperm(len(y), generator=g)[:12]
        loss(model(x[bi]), y[bi], batch_indices=bi)
        state = _state(model, loss, step=step, batch_indices=bi)
        with torch.no_grad():
            model.scale.mul_(1.5)  # the "training" changes the embeddings: a refresh must see it
        cb.on_step_end(state)
        assert torch.equal(index.item_losses[bi], loss.item_losses.float())
        assert index.has_loss[bi].all()
    assert cb.refresh_steps == [0, 1, 3, 6]
    # the last refresh used the model as it was then (scale 1.5^6)
    want, _, _ = per_class_kmeans(x * 1.5 ** 6, y, 2, seed=index.seed + 3)
    assert torch.allclose(index.centres, want, atol=1e-4)
    # the loss needs batch indices; so does the callback
    with pytest.raises(ValueError, match="batch indices"):
        cb.on_step_end(_state(model, loss, step=8, batch_indices=None))
    # refresh-only use: no batch indices needed
    quiet = ClusterRefresh(index, TensorDataset(x, y), every=None, feed_losses=False)
    quiet.on_step_end(_state(model, loss, step=8, batch_indices=None))
    assert quiet.refresh_steps == []
    # state round trip
    other = ClusterRefresh(ClusterIndex(y, 2), TensorDataset(x, y), every=3)
    other.load_state_dict(cb.state_dict())
    assert other.refresh_steps == cb.refresh_steps and torch.equal(other.index.centres, index.centres)


def test_refresh_can_initialise_representatives():
    x, y, _ = _blobs(C=3, K=2, n=6)
    y = (y - 1) // 2  # labels 0..2 for RepMet
    index = ClusterIndex(y, 2)
    loss = RepMetLoss(3, 2, 4)
    cb = ClusterRefresh(index, TensorDataset(x, y), every=None, at_steps=(2,), init_representatives=True)
    cb.on_fit_start(_state(_Model(), loss))
    assert torch.equal(loss.representatives.detach(), index.centres)
    with torch.no_grad():
        loss.representatives.add_(1.0)
    loss(x[:12], y[:12])
    cb.on_step_end(_state(_Model(), loss, step=1, batch_indices=torch.arange(12)))
    assert not torch.equal(loss.representatives.detach(), index.centres)  # step 1: no refresh
    cb.on_step_end(_state(_Model(), loss, step=2, batch_indices=torch.arange(12)))
    assert torch.equal(loss.representatives.detach(), index.centres) and cb.refresh_steps == [0, 2]
    with pytest.raises(ValueError, match="init_from"):
        ClusterRefresh(ClusterIndex(y, 2), TensorDataset(x, y), init_representatives=True).on_fit_start(
            _state(_Model(), MagnetLoss()))


def test_refresh_bad_arguments():
    x, y, _ = _blobs()
    with pytest.raises(ValueError, match="items but the index"):
        ClusterRefresh(ClusterIndex(y, 2), TensorDataset(x[:-1], y[:-1]))
    with pytest.raises(ValueError, match="every"):
        ClusterRefresh(ClusterIndex(y, 2), TensorDataset(x, y), every=0)


def test_index_follows_its_device():
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    x, y, _ = _blobs()
    for device in devices:
        index = ClusterIndex(y.to(device), 2).fit(x.to(device))
        assert index.centres.device.type == device and index.assignments.device.type == device
        assert index.seed_probabilities().device.type == device
        index.to("cpu")
        assert index.centres.device.type == "cpu" and index.labels.device.type == "cpu"
