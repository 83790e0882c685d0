"""The policy's state, network, rewards and its REINFORCE / PPO / A2C updates."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from rankdml.pads import (Policy, PolicyState, PolicyTrainer, class_distances, metric_names, ppo_loss,
                          reinforce_loss, reward_metric, sign_reward, state_size)
from rankdml.pads.policy import _taken

from . import reference_pads as ref


def test_state_size_documented_values():
    assert state_size(metric_history=20) == 198  # sample runs: (4 + 20) * 7 + 29 + 1
    assert state_size() == 128  # the original's default H = 10
    assert state_size(metric_history=20, state_metrics=("recall", "dists", "nmi")) == 198
    assert state_size(metric_history=20, include_train_metrics=True) == 2 * 24 * 7 + 30
    assert state_size(metric_history=5, distribution_history=-1) == 9 * 7 + 29 * 5 + 1
    assert state_size(ks=(1, 10, 100, 1000), metric_history=20, state_metrics=("recall",)) == 24 * 4 + 30
    assert PolicyState(metric_history=20).size == 198
    s = PolicyState(metric_history=20)
    out = s(list(range(7)), torch.full((29,), 1 / 29), 0.5)
    assert out.shape == (1, 198) and out.dtype == torch.float32


def test_metric_names_order():
    assert metric_names(("recall", "dists", "nmi")) == ["recall@1", "recall@2", "recall@4", "recall@8",
                                                        "dists/intra", "dists/inter", "nmi"]
    with pytest.raises(ValueError, match="state_metrics"):
        metric_names(("recall", "svd"))


def test_state_layout_history_running_means_distribution_progress():
    H, avgs = 3, (2, 4)
    s = PolicyState(ks=(1,), state_metrics=("recall", "nmi"), metric_history=H, running_averages=avgs, num_bins=4)
    rng = np.random.default_rng(0)
    seen = []
    for t in range(7):
        m = rng.random(2).tolist()
        seen.append(m)
        p = rng.random(4)
        p = (p / p.sum()).tolist()
        out = s(m, p, t / 10).double()[0].numpy()
        assert out.shape == (s.size,) == ((H + 2) * 2 + 4 + 1,)
        # history: the last H vectors, oldest first; at the start padded with copies of the first
        padded = [seen[0]] * max(0, H - len(seen)) + seen[-H:]
        hist = padded[-H:] if len(seen) > 1 else [seen[0]] * H
        assert np.allclose(out[:2 * H], np.ravel(hist), atol=1e-6)
        for i, r in enumerate(avgs):
            assert np.allclose(out[2 * H + 2 * i:2 * H + 2 * i + 2], np.mean(seen[-r:], axis=0), atol=1e-6)
        assert np.allclose(out[2 * (H + 2):2 * (H + 2) + 4], p, atol=1e-6)
        assert abs(out[-1] - t / 10) < 1e-6


def test_first_state_repeats_the_first_vector_as_the_original():
    # the original appends copies of the first vector until max(H, 2) are stored; later vectors are appended
    s = PolicyState(ks=(1,), state_metrics=("nmi",), metric_history=3, running_averages=(), num_bins=2)
    first = s([0.1], [0.5, 0.5], 0.0)[0, :3]
    assert torch.allclose(first, torch.tensor([0.1, 0.1, 0.1]))
    second = s([0.2], [0.5, 0.5], 0.0)[0, :3]
    assert torch.allclose(second, torch.tensor([0.1, 0.1, 0.2]))


def test_no_average_takes_the_oldest_of_each_window():
    s = PolicyState(ks=(1,), state_metrics=("nmi",), metric_history=1, running_averages=(2, 3), no_average=True,
                    num_bins=2)
    for v in (1.0, 2.0, 3.0, 4.0):
        out = s([v], [0.5, 0.5], 0.0)[0]
    assert out[1:3].tolist() == [3.0, 2.0]


def test_state_round_trip_and_errors():
    s = PolicyState(metric_history=4)
    for t in range(5):
        s([t] * 7, torch.full((29,), 1 / 29), t)
    u = PolicyState(metric_history=4)
    u.load_state_dict(s.state_dict())
    assert torch.equal(s([9] * 7, torch.full((29,), 1 / 29), 9), u([9] * 7, torch.full((29,), 1 / 29), 9))
    with pytest.raises(ValueError, match="metric vector of 7"):
        s([1.0] * 6, torch.full((29,), 1 / 29), 0)
    with pytest.raises(ValueError, match="29 probabilities"):
        s([1.0] * 7, torch.full((28,), 1 / 28), 0)
    with pytest.raises(ValueError, match="missing"):
        s.metric_vector({"recall@1": 0.5})
    with pytest.raises(ValueError, match="metric_history"):
        PolicyState(metric_history=0)


def test_class_distances_match_scipy_loops():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(17, 5, generator=g, dtype=torch.float64) * 3
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3, 3, 4, 1, 0, 2, 3])
    intra, inter = class_distances(x, y)
    e_intra, e_inter = ref.class_distances(x.numpy(), y.tolist())
    assert abs(intra - e_intra) < 1e-10 and abs(inter - e_inter) < 1e-10
    with pytest.raises(ValueError, match="at least 2 classes"):
        class_distances(x[:3], y[:3])
    with pytest.raises(ValueError, match="single item"):
        class_distances(x[:3], torch.tensor([0, 1, 2]))


def test_rewards():
    m = {"recall@1": 0.6, "nmi": 0.8, "recall@2": 0.7}
    assert reward_metric(m, 0) == 0.8 and reward_metric(m, 1) == 0.6 and abs(reward_metric(m, 2) - 0.7) < 1e-12
    assert reward_metric({"recall@10": 0.3}, 1, k=10) == 0.3
    assert sign_reward(0.7, 0.6) == 1.0 and sign_reward(0.6, 0.7) == -1.0 and sign_reward(0.5, 0.5) == 0.0
    with pytest.raises(ValueError, match="reward_type"):
        reward_metric(m, 3)
    with pytest.raises(ValueError, match="needs"):
        reward_metric({"recall@1": 0.5}, 2)


def _policy(seed=0, **kw):
    torch.manual_seed(seed)
    return Policy(20, num_bins=5, hidden=(16, 16), action_values=(0.8, 1.0, 1.25), **kw)


def test_policy_shapes_and_init():
    pol = _policy()
    s = torch.randn(3, 20)
    v, logits = pol(s)
    assert v.shape == (3, 1) and logits.shape == (3, 3, 5)
    assert torch.allclose(pol.action_probs(s).sum(1), torch.ones(3, 5))
    a = pol.act(s[:1], torch.Generator().manual_seed(0))
    assert a.shape == (5,) and a.dtype == torch.int64 and ((a >= 0) & (a < 3)).all()
    assert torch.allclose(pol.multipliers(torch.tensor([0, 1, 2, 1, 0])),
                          torch.tensor([0.8, 1.0, 1.25, 1.0, 0.8], dtype=torch.float64))
    assert _policy(value_head=False)(s)[0] is None
    he = _policy(init="he_n")
    assert (he.actions.bias == 0).all() and _policy(init="base").actions.weight.std() < 0.02
    with pytest.raises(ValueError, match="state of shape"):
        pol(torch.randn(1, 19))
    with pytest.raises(ValueError, match="init"):
        _policy(init="xavier")


def test_act_handles_nan_probabilities():
    pol = _policy()
    with torch.no_grad():
        pol.actions.bias[0] = float("nan")  # the logits of action 0 in bin 0 -> NaN column
    a = pol.act(torch.zeros(1, 20), torch.Generator().manual_seed(0))
    assert a.shape == (5,) and ((a >= 0) & (a < 3)).all()


def test_act_frequencies_follow_the_softmax():
    pol = _policy(3)
    s = torch.randn(1, 20)
    probs = pol.action_probs(s)[0]  # (A, K)
    g = torch.Generator().manual_seed(1)
    counts = torch.zeros(3, 5)
    for _ in range(600):
        a = pol.act(s, g)
        counts[a, torch.arange(5)] += 1
    from scipy.stats import chisquare
    expected = (probs * 600).detach()
    assert chisquare(counts.reshape(-1).numpy(), expected.reshape(-1).numpy()).pvalue > 1e-3
    assert chisquare(counts.reshape(-1).numpy(), expected.flip(0).reshape(-1).numpy()).pvalue < 1e-3


def test_losses_match_naive_formulas():
    g = torch.Generator().manual_seed(0)
    logp = torch.log(torch.rand(1, 6, generator=g, dtype=torch.float64))
    old = torch.log(torch.rand(1, 6, generator=g, dtype=torch.float64))
    for A in (1.7, -0.4):
        naive = -sum(A * float(logp[0, k]) for k in range(6)) / 6
        assert abs(float(reinforce_loss(logp, A)) - naive) < 1e-12
        terms = []
        for k in range(6):
            r = float(torch.exp(logp[0, k] - old[0, k]))
            terms.append(min(r * A, min(max(r, 0.8), 1.2) * A))
        assert abs(float(ppo_loss(logp, old, A, 0.2)) + sum(terms) / 6) < 1e-12


def test_ppo_clip_stops_the_gradient_beyond_the_trust_region():
    old = torch.log(torch.tensor([[0.2, 0.2]], dtype=torch.float64))
    logp = torch.log(torch.tensor([[0.3, 0.21]], dtype=torch.float64)).requires_grad_()  # ratios 1.5, 1.05
    ppo_loss(logp, old, 1.0, 0.2).backward()
    assert logp.grad[0, 0] == 0 and logp.grad[0, 1] < 0
    torch.autograd.gradcheck(lambda lp: ppo_loss(lp, old, -0.7, 0.2), (logp.detach().clone().requires_grad_(),))
    torch.autograd.gradcheck(lambda lp: reinforce_loss(lp, 0.3), (logp.detach().clone().requires_grad_(),))


@pytest.mark.parametrize("mode", ["reinforce", "ppo"])
@pytest.mark.parametrize("advantage", [1.0, -1.0])
def test_hand_set_advantage_moves_the_taken_actions(mode, advantage):
    pol = _policy(1, value_head=False)
    trainer = PolicyTrainer(pol, mode=mode, lr=0.01, use_a2c=False)
    s = torch.randn(1, 20, generator=torch.Generator().manual_seed(2))
    actions = torch.tensor([0, 2, 1, 0, 2])
    before = _taken(torch.log(pol.action_probs(s)), actions).detach()
    trainer.rewards = []  # EMA baseline of no previous reward is 0, so the advantage is the reward
    info = trainer.update(s, actions, s, reward=advantage, metric=0.5)
    assert info["advantage"] == advantage
    after = _taken(torch.log(pol.action_probs(s)), actions).detach()
    change = (after - before)[0]
    if advantage > 0:
        assert (change > 0).all(), change  # every bin's chosen action became more likely
    else:
        assert (change < 0).all(), change


def test_a2c_advantage_and_value_targets():
    for target in ("td", "metric"):
        pol = _policy(4)
        ref_pol = copy.deepcopy(pol)
        trainer = PolicyTrainer(pol, mode="ppo", use_a2c=True, discount=0.99, value_target=target)
        s0, s1 = torch.randn(1, 20), torch.randn(1, 20)
        info = trainer.update(s0, torch.tensor([1, 1, 1, 1, 1]), s1, reward=-1.0, metric=0.73)
        v0, v1 = float(ref_pol(s0)[0].detach()), float(ref_pol(s1)[0].detach())
        assert abs(info["advantage"] - (-1.0 + 0.99 * v1 - v0)) < 1e-6
        y = -1.0 + 0.99 * v1 if target == "td" else 0.73
        assert abs(info["value_loss"] - 0.5 * (v0 - y) ** 2) < 1e-6


def test_ema_baseline_without_a2c():
    trainer = PolicyTrainer(_policy(value_head=False), mode="reinforce", use_a2c=False, ema_alpha=0.05)
    s = torch.zeros(1, 20)
    rewards = [1.0, -1.0, 1.0, 1.0]
    for t, r in enumerate(rewards):
        info = trainer.update(s, torch.zeros(5, dtype=torch.long), s, reward=r, metric=0.0)
        prev = rewards[:t]
        ema = 0.0
        if prev:
            ema = prev[0]
            for v in prev[1:]:
                ema = 0.95 * ema + 0.05 * v
        assert abs(info["advantage"] - (r - ema)) < 1e-6  # float32 tensors


def test_old_policy_refresh_schedule():
    trainer = PolicyTrainer(_policy(5), mode="ppo", old_policy_update=3, generator=torch.Generator().manual_seed(0))
    refreshed = []
    s = torch.randn(1, 20)
    for call in range(8):
        before = [p.clone() for p in trainer.old_policy.parameters()]
        trainer.step(s, reward=None if call == 0 else 1.0, metric=0.5)
        changed = any(not torch.equal(a, b) for a, b in zip(before, trainer.old_policy.parameters()))
        if changed:
            assert all(torch.equal(a, b) for a, b in zip(trainer.old_policy.parameters(), trainer.policy.parameters()))
            refreshed.append(call)
    assert refreshed == [3, 6]  # call_count % 3 == 0 and call_count > 1


def test_trainer_errors_and_round_trip():
    with pytest.raises(ValueError, match="value_head"):
        PolicyTrainer(_policy(value_head=False), use_a2c=True)
    with pytest.raises(ValueError, match="mode"):
        PolicyTrainer(_policy(), mode="a3c")
    with pytest.raises(ValueError, match="value_target"):
        PolicyTrainer(_policy(), value_target="raw")
    t = PolicyTrainer(_policy())
    with pytest.raises(ValueError, match="5 action indices"):
        t.update(torch.zeros(1, 20), torch.tensor([0, 1, 3, 0, 0]), torch.zeros(1, 20), 1.0, 0.5)
    with pytest.raises(ValueError, match="5 action indices"):
        t.update(torch.zeros(1, 20), torch.tensor([0, 1]), torch.zeros(1, 20), 1.0, 0.5)
    a = PolicyTrainer(_policy(6), generator=torch.Generator().manual_seed(3))
    s = torch.randn(1, 20)
    for r in (None, 1.0, -1.0):
        a.step(s, r, 0.5)
    saved = copy.deepcopy(a.state_dict())
    b = PolicyTrainer(_policy(7), generator=torch.Generator().manual_seed(9))
    b.load_state_dict(saved)
    for r in (1.0, 0.0, -1.0):
        x, _ = a.step(s, r, 0.4)
        y, _ = b.step(s, r, 0.4)
        assert torch.equal(x, y)
    assert all(torch.equal(p, q) for p, q in zip(a.policy.parameters(), b.policy.parameters()))
