"""The PADS callback driven by a hand-made TrainState and a tiny model (the loop is rebuilt in parallel)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from rankdml.callbacks import TrainState
from rankdml.losses import MarginLoss
from rankdml.pads import PADS


class ToyData(Dataset):
    """Gaussian blobs, one per class, with `labels` like every rankdml data set."""

    def __init__(self, n_classes=6, per_class=6, dim=8, seed=0):
        g = torch.Generator().manual_seed(seed)
        centres = torch.randn(n_classes, dim, generator=g)
        self.labels = np.repeat(np.arange(n_classes), per_class)
        self.x = centres[self.labels] + 0.8 * torch.randn(len(self.labels), dim, generator=g)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.x[i], int(self.labels[i])


class Embed(nn.Module):
    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        return nn.functional.normalize(self.fc(x), dim=1)


TRAIN, VAL = ToyData(seed=0), ToyData(per_class=3, seed=1)
STEPS_PER_EPOCH, TOTAL = 10, 20


def _setup(seed=0, **pads_kw):
    pads_kw.setdefault("progress", False)
    pads = PADS(VAL, sample_every=4, metric_history=3, seed=seed, **pads_kw)
    model = Embed(seed)
    loss = MarginLoss(num_classes=6, sampler=pads.sampler)
    opt = torch.optim.Adam(list(model.parameters()) + list(loss.parameters()), lr=0.05)
    state = TrainState(model=model, loss=loss, optimizer=opt, device=torch.device("cpu"), loader=None,
                       steps_per_epoch=STEPS_PER_EPOCH, total_steps=TOTAL)
    return pads, model, loss, opt, state


def _train(pads, model, loss, opt, state, first, last):
    """Steps first..last; step t's batch depends only on t (3 classes x 3 items)."""
    for t in range(first, last + 1):
        g = torch.Generator().manual_seed(1000 + t)
        classes = torch.randperm(6, generator=g)[:3]
        idx = torch.cat([torch.nonzero(torch.as_tensor(TRAIN.labels) == c)[:, 0][torch.randperm(6, generator=g)[:3]]
                         for c in classes])
        x, y = TRAIN.x[idx], torch.as_tensor(TRAIN.labels[idx.numpy()])
        value = loss(model(x), y)
        opt.zero_grad()
        value.backward()
        opt.step()
        state.step, state.epoch = t, (t - 1) // STEPS_PER_EPOCH + 1
        pads.on_step_end(state)


def test_updates_every_m_steps_after_the_first_m_plus_one():
    pads, *rest = _setup()
    _train(pads, *rest, 1, TOTAL)
    assert [r["step"] for r in pads.history] == [5, 9, 13, 17]
    assert np.isnan(pads.history[0]["reward"]) and all(r["reward"] in (-1.0, 0.0, 1.0) for r in pads.history[1:])
    assert {"val/recall@1", "val/nmi", "val/dists/intra", "val/dists/inter", "entropy", "probs"} <= set(pads.history[0])
    assert not torch.equal(pads.distribution.weights, pads.distribution.initial_weights("uniform_low"))
    assert abs(sum(pads.history[-1]["probs"]) - 1) < 1e-9
    steps, probs = pads.distribution_trace()
    assert steps.tolist() == [0, 5, 9, 13, 17] and probs.shape == (5, 29)
    assert np.allclose(probs[0, 3:12], 1 / 9) and np.allclose(probs[-1], pads.distribution.probs.numpy())
    # each update multiplies every bin by one of the action values (0.5, 1, 1.5), then renormalises
    ratio = (probs[1] / probs[0]) / (probs[1] / probs[0])[3]
    assert np.allclose(ratio[3:12] * (0.5, 1.0, 1.5)[pads.history[0]["actions"][3]],
                       np.array([0.5, 1.0, 1.5])[pads.history[0]["actions"][3:12]])


def test_resume_equals_uninterrupted_run():
    pads, model, loss, opt, state = _setup()
    _train(pads, model, loss, opt, state, 1, TOTAL)

    p2, m2, l2, o2, s2 = _setup()
    _train(p2, m2, l2, o2, s2, 1, 11)  # stop between two policy updates, mid-way through the counter
    buf = io.BytesIO()
    torch.save({"pads": p2.state_dict(), "model": m2.state_dict(), "loss": l2.state_dict(),
                "opt": o2.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)  # plain tensors, numbers and containers only
    p3, m3, l3, o3, s3 = _setup(seed=5)  # other seeds: only the checkpoint may make it equal
    p3.load_state_dict(saved["pads"])
    m3.load_state_dict(saved["model"])
    l3.load_state_dict(saved["loss"])
    o3.load_state_dict(saved["opt"])
    _train(p3, m3, l3, o3, s3, 12, TOTAL)

    assert len(p3.history) == len(pads.history) == 4
    for a, b in zip(pads.history, p3.history):
        assert repr(a) == repr(b)  # float reprs round-trip exactly, and NaN (the first reward) equals itself
    assert torch.equal(pads.distribution.weights, p3.distribution.weights)
    assert all(torch.equal(a, b) for a, b in zip(pads.policy.parameters(), p3.policy.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), m3.parameters()))
    x, y = TRAIN.x[:12], torch.as_tensor(TRAIN.labels[:12])
    assert all(torch.equal(a, b) for a, b in zip(pads.sampler(model(x), y), p3.sampler(m3(x), y)))


def test_always_times_one_policy_leaves_the_distribution_unchanged():
    pads, *rest = _setup(action_values=(0.8, 1.0, 1.25))
    with torch.no_grad():  # logits: +50 for action 1 (x1), -50 for the others, in every bin
        pads.policy.actions.weight.zero_()
        bias = pads.policy.actions.bias.view(3, -1)
        bias[:] = -50.0
        bias[1] = 50.0
    before = pads.distribution.weights.clone()
    _train(pads, *rest, 1, TOTAL)
    assert len(pads.history) == 4 and all(a == 1 for r in pads.history for a in r["actions"])
    assert torch.equal(pads.distribution.weights, before)


def test_training_delay_and_progress_off(capsys):
    pads, *rest = _setup(training_delay=1)
    _train(pads, *rest, 1, TOTAL)
    assert [r["step"] for r in pads.history] == [15, 19]  # the counter starts in epoch 2 (step 11)
    assert "PADS validation" not in capsys.readouterr().err


def test_scripted_rewards_and_sub_episodes(monkeypatch):
    pads, *rest = _setup(reward_type=1, sub_episodes=1, state_metrics=("recall",))
    script = iter([0.5, 0.6, 0.4, 0.4, 0.9, 0.1, 0.3, 0.3, 0.8])  # (intermediate, final) per update, + one
    calls = []

    def fake(model, dataset, device):
        calls.append(dataset)
        return {"recall@1": next(script), "recall@2": 0.0, "recall@4": 0.0, "recall@8": 0.0}

    monkeypatch.setattr(pads, "compute_metrics", fake)
    _train(pads, *rest, 1, TOTAL)
    # the intermediate evaluation comes at counter M // 2 = 2; R = 0.7 * r_mid + r_end
    expected = [0.7 * 0.5 + 0.6, 0.7 * 0.4 + 0.4, 0.7 * 0.9 + 0.1, 0.7 * 0.3 + 0.3]
    assert np.allclose([r["reward_metric"] for r in pads.history], expected)
    assert [r["reward"] for r in pads.history][1:] == [-1.0, 1.0, -1.0]
    assert len(calls) == 9 and pads._sub_rewards == [0.8]  # step 19: the next episode's intermediate


def test_warns_when_the_sampler_is_not_used_and_bad_arguments():
    pads, model, loss, opt, state = _setup()
    state.loss = MarginLoss()
    with pytest.warns(UserWarning, match="sampler"):
        pads.on_fit_start(state)
    with pytest.raises(ValueError, match="scramble"):
        PADS(VAL, scramble_dataloaders=True)
    with pytest.raises(ValueError, match="sample_every"):
        PADS(VAL, sample_every=0)
    with pytest.raises(ValueError, match="reward_type"):
        PADS(VAL, reward_type=5)
    with pytest.raises(ValueError, match="train_eval_set"):
        PADS(VAL, include_train_metrics=True)
    with pytest.raises(ValueError, match="smaller train_fraction"):
        PADS(ToyData(per_class=1))  # one validation image per class: no query has a positive
    with pytest.raises(ValueError, match="max\\(ks\\)"):
        PADS(VAL, ks=(1, 100))
    with pytest.raises(ValueError, match="labelled"):
        PADS(torch.utils.data.TensorDataset(torch.zeros(4, 8)))


def test_original_sample_run_state_size():
    pads = PADS(VAL, metric_history=20, state_metrics=("recall", "dists", "nmi"), action_values=(0.8, 1, 1.25),
                old_policy_update=5, progress=False)
    assert pads.state_maker.size == 198 and pads.policy.body[0].in_features == 198
    assert pads.policy.actions.out_features == 3 * 29


@pytest.mark.parametrize("kw", [dict(mode="reinforce", use_a2c=False), dict(value_target="metric"),
                                dict(include_train_metrics=True, train_eval_set=TRAIN, reward_type=0),
                                dict(merge_out_of_range=False, same_class_negatives=False, anchor_as_positive=False)])
def test_variants_run(kw):
    pads, *rest = _setup(**kw)
    _train(pads, *rest, 1, 10)
    assert len(pads.history) == 2 and all(np.isfinite(r["reward_metric"]) for r in pads.history)
    if kw.get("include_train_metrics"):
        assert pads.state_maker.size == 2 * (3 + 4) * 7 + 29 + 1
    if kw.get("mode") == "reinforce":
        assert pads.trainer.old_policy is None and pads.policy.value is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_and_miner():
    pads, model, loss, opt, state = _setup()
    model.cuda()
    loss.cuda()
    state.device = torch.device("cuda")
    opt = torch.optim.Adam(list(model.parameters()) + list(loss.parameters()), lr=0.05)
    for t in range(1, 11):
        x, y = TRAIN.x[:18].cuda(), torch.as_tensor(TRAIN.labels[:18]).cuda()
        a, p, n = pads.sampler(model(x), y)
        assert a.is_cuda
        value = loss(model(x), y)
        opt.zero_grad()
        value.backward()
        opt.step()
        state.step, state.epoch = t, 1
        pads.on_step_end(state)
    assert len(pads.history) == 2
    assert any(key.startswith("cuda") for key in pads.sampler.state_dict()["generators"])


def test_policy_step_leaves_the_global_rng_alone():
    pads, model, loss, opt, state = _setup()
    state.step = 5
    before = torch.get_rng_state()
    pads.policy_step(state)
    pads.policy_step(state)
    assert torch.equal(before, torch.get_rng_state())
