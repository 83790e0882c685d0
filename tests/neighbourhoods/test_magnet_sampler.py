"""MagnetSampler: batch layout (M clusters x D items of the right classes), seed choice, impostors,
replacement rules, probabilities, laziness (refreshes seen on schedule), state, errors."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from rankdml.clusters import ClusterIndex
from rankdml.data import MagnetSampler

from .conftest import clustered_batch


def _index(C=5, K=2, n=6, dim=3, seed=0, spread=0.2):
    x, y, _ = clustered_batch(C, K, n, dim=dim, seed=seed, spread=spread)
    return ClusterIndex(y, K).fit(x.float()), x.float(), y


def _check_batch(index, batch, M, D, distinct_items=True):
    b = torch.tensor(batch)
    assert b.shape == (M * D,)
    cl = index.assignments[b].view(M, D)
    assert (cl == cl[:, :1]).all(), "each group of D items is one cluster"
    clusters = cl[:, 0]
    assert clusters.unique().numel() == M, "M distinct clusters"
    lab = index.labels[b].view(M, D)
    assert torch.equal(lab, index.cluster_labels[clusters][:, None].expand(M, D)), "items of the clusters' classes"
    seed_label = index.cluster_labels[clusters[0]]
    assert (index.cluster_labels[clusters[1:]] != seed_label).all(), "impostors from other classes"
    if distinct_items:
        for row in b.view(M, D):
            assert row.unique().numel() == D, "without replacement"
    return clusters


@pytest.mark.parametrize("M,D", [(4, 3), (2, 6), (9, 1)])
def test_batches_are_m_clusters_of_d_items(M, D):
    index, _, _ = _index()
    sampler = MagnetSampler(index, M, D, seed=1)
    assert sampler.updates_during_epoch is True
    batches = list(sampler)
    assert len(batches) == len(sampler) == 60 // (M * D)
    for batch in batches:
        clusters = _check_batch(index, batch, M, D)
        # impostors are the M - 1 nearest clusters of other classes (brute force)
        d = ((index.centres - index.centres[clusters[0]]) ** 2).sum(1)
        d[index.cluster_labels == index.cluster_labels[clusters[0]]] = float("inf")
        assert torch.equal(clusters[1:].sort().values, d.argsort()[: M - 1].sort().values)


def test_seed_follows_the_losses():
    index, _, y = _index()
    sampler = MagnetSampler(index, 3, 2, seed=2)
    # only cluster 7 has a positive loss: it is always the seed
    index.update_losses(torch.arange(len(y)), (index.assignments == 7).float())
    assert all(index.assignments[b[0]].item() == 7 for b in (sampler.sample_batch() for _ in range(20)))
    # two clusters with losses 1 and 3: seed frequencies about 1/4 and 3/4
    index.update_losses(torch.arange(len(y)), (index.assignments == 2).float() + 3 * (index.assignments == 5).float())
    seeds = torch.tensor([index.assignments[sampler.sample_batch()[0]].item() for _ in range(800)])
    assert set(seeds.tolist()) == {2, 5}
    assert (seeds == 5).float().mean().item() == pytest.approx(0.75, abs=0.05)
    # every loss 0: uniform over the clusters, no NaN
    index.update_losses(torch.arange(len(y)), torch.zeros(len(y)))
    assert torch.isfinite(index.seed_probabilities()).all()
    seeds = torch.tensor([index.assignments[sampler.sample_batch()[0]].item() for _ in range(500)])
    assert seeds.unique().numel() == index.num_clusters


def test_small_clusters_with_and_without_replacement():
    # class sizes 6, 6, 6, 2: with D = 4 the last class cannot give D distinct items
    y = torch.tensor([0] * 6 + [1] * 6 + [2] * 6 + [3] * 2)
    x = torch.randn(len(y), 3, generator=torch.Generator().manual_seed(0)) + 5 * y[:, None].float()
    index = ClusterIndex(y, 1).fit(x)
    with pytest.raises(ValueError, match="fewer than D = 4 items"):
        MagnetSampler(index, 4, 4)
    sampler = MagnetSampler(index, 4, 4, allow_replacement=True, seed=3)
    for _ in range(10):
        b = torch.tensor(sampler.sample_batch()).view(4, 4)
        _check_batch(index, b.flatten().tolist(), 4, 4, distinct_items=False)
        for row in b:
            n = int(index.cluster_sizes[index.assignments[row[0]]])
            if n >= 4:
                assert row.unique().numel() == 4  # large clusters still without replacement
            else:
                assert row.unique().numel() <= n
    # a cluster (not class) smaller than D, drawn without replacement: a clear error when it is drawn
    y2 = torch.tensor([0] * 6 + [1] * 6)
    x2 = torch.cat([torch.zeros(5, 2), torch.full((1, 2), 9.0), torch.randn(6, 2) + 30])
    index2 = ClusterIndex(y2, 2).fit(x2)  # class 0 splits into 5 + 1
    sampler2 = MagnetSampler(index2, 2, 3, seed=0)
    with pytest.raises(ValueError, match="fewer than D = 3; pass allow_replacement=True"):
        for _ in range(50):
            sampler2.sample_batch()


def test_sampler_errors():
    index, _, y = _index(C=3, K=2)
    with pytest.raises(ValueError, match="only 4 clusters of other classes"):
        MagnetSampler(index, 6, 2)
    with pytest.raises(ValueError, match="M >= 2"):
        MagnetSampler(index, 1, 2)
    with pytest.raises(ValueError, match="no clusters yet"):
        next(iter(MagnetSampler(ClusterIndex(y, 2), 2, 2)))


def test_sampler_sees_refreshes_between_steps():
    # the loader draws a batch only when asked: a refresh after step t changes batch t + 1
    index, x, y = _index()
    sampler = MagnetSampler(index, 3, 2, seed=4)
    loader = DataLoader(TensorDataset(x, y, torch.arange(len(y))), batch_sampler=sampler)
    seen = []
    for step, (xb, yb, ib) in enumerate(loader, start=1):
        seen.append(_check_batch(index, ib.tolist(), 3, 2))
        assert torch.equal(yb, y[ib])
        if step % 3 == 0:  # "refresh" on schedule, with different embeddings: new clusters
            index.fit(torch.randn(len(y), 3, generator=torch.Generator().manual_seed(step)))
    assert len(seen) == len(sampler)


def test_sampler_state_dict_resumes_the_same_batches():
    index, _, _ = _index()
    a = MagnetSampler(index, 3, 2, seed=5)
    a.sample_batch()
    state = a.state_dict()
    want = [a.sample_batch() for _ in range(5)]
    b = MagnetSampler(index, 3, 2, seed=123)
    b.load_state_dict(state)
    assert [b.sample_batch() for _ in range(5)] == want
    # a seeded start is reproducible
    c, d = MagnetSampler(index, 3, 2, seed=6), MagnetSampler(index, 3, 2, seed=6)
    assert [c.sample_batch() for _ in range(4)] == [d.sample_batch() for _ in range(4)]


def test_sampler_follows_the_index_device():
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        index, x, y = _index()
        index.to(device)
        sampler = MagnetSampler(index, 3, 2, seed=0)
        assert sampler.generator.device.type == device
        batch = sampler.sample_batch()
        assert isinstance(batch[0], int)
        _check_batch(index, batch, 3, 2)
