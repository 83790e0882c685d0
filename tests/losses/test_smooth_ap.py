"""SmoothAPLoss, smooth_ap_estimate, TemperatureSchedule: naive loops, the B^3 re-derivation, PML, gradients, edges."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from sklearn.metrics import average_precision_score

from rankdml.callbacks import Callback, TrainState
from rankdml.losses import LOSSES, SmoothAPLoss, TemperatureSchedule, make_loss, smooth_ap_estimate
from rankdml.losses.smooth_ap import _blocks, _CosineGram, _pairs
from rankdml.masks import positive_mask
from reference import smooth_ap as ref

from .conftest import make_batch

SAP_LAYOUTS = {
    "pk_4x3_shuffled": (3, 3, 3, 3),
    "unequal_2_5_3_4": (2, 5, 3, 4),
    "singletons_1_2_1_4_3": (1, 2, 1, 4, 3),
    "pairs_5x2": (2,) * 5,
}
TINY_BLOCKS = 7  # fewer elements than one query's row: one query per block, many blocks


def blocks_batch(num_id, g, dim=8, seed=0, dtype=torch.float64, scale=1.0):
    """The official layout: `num_id` contiguous blocks of `g` items of one class."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_id, dim, generator=gen, dtype=dtype).repeat_interleave(g, 0)
    x = scale * centres + torch.randn(num_id * g, dim, generator=gen, dtype=dtype)
    return x, torch.arange(num_id).repeat_interleave(g) * 7 + 2


@pytest.fixture(params=list(SAP_LAYOUTS))
def layout(request):
    return make_batch(SAP_LAYOUTS[request.param], dim=6, seed=list(SAP_LAYOUTS).index(request.param),
                      normalize=False)


def leave_one_out_map(x: torch.Tensor, y: torch.Tensor) -> float:
    """scikit-learn's mean AP over queries, each against all other items, on cosine similarities."""
    xn = torch.nn.functional.normalize(x, dim=1)
    s = (xn @ xn.T).numpy()
    aps = []
    for q in range(len(y)):
        others = np.arange(len(y)) != q
        aps.append(average_precision_score((y[others] == y[q]).numpy(), s[q, others]))
    return float(np.mean(aps))


# --- values against the naive loops ---------------------------------------------------------------

@pytest.mark.parametrize("tau", [0.01, 0.1, 1.0])
@pytest.mark.parametrize("blocks", [None, TINY_BLOCKS])
def test_paper_matches_naive_loop(layout, tau, blocks):
    x, y = layout
    kw = {} if blocks is None else {"max_block_elements": blocks}
    got = SmoothAPLoss(temperature=tau, **kw)(x, y).item()
    assert got == pytest.approx(ref.paper_loss(x.numpy(), y.numpy(), tau), abs=1e-10)


@pytest.mark.parametrize("tau", [0.01, 0.1])
@pytest.mark.parametrize("blocks", [None, TINY_BLOCKS])
def test_original_matches_naive_rule_on_any_layout(layout, tau, blocks):
    x, y = layout
    kw = {} if blocks is None else {"max_block_elements": blocks}
    got = SmoothAPLoss(temperature=tau, variant="original", **kw)(x, y).item()
    assert got == pytest.approx(ref.original_loss(x.numpy(), y.numpy(), tau), abs=1e-10)


@pytest.mark.parametrize("num_id,g", [(6, 4), (3, 5), (8, 2), (2, 7)])
@pytest.mark.parametrize("tau", [0.01, 0.05])
def test_original_matches_cube_rederivation_on_its_layout(num_id, g, tau):
    x, y = blocks_batch(num_id, g, seed=num_id * 10 + g)
    cube = ref.cube_loss(x, num_id, tau).item()
    assert SmoothAPLoss(temperature=tau, variant="original")(x, y).item() == pytest.approx(cube, abs=1e-12)
    # ... and the cube itself is the naive loop of the original rule
    assert cube == pytest.approx(ref.original_loss(x.numpy(), y.numpy(), tau), abs=1e-10)


def test_original_gradient_matches_autograd_through_cube():
    x, y = blocks_batch(5, 4, seed=3)
    a = x.clone().requires_grad_(True)
    b = x.clone().requires_grad_(True)
    SmoothAPLoss(temperature=0.05, variant="original")(a, y).backward()
    ref.cube_loss(b, 5, 0.05).backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("variant", ["paper", "original"])
@pytest.mark.parametrize("blocks", [None, TINY_BLOCKS])
def test_gradient_matches_autograd_through_dense_reference(layout, variant, blocks):
    x, y = layout
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    kw = {} if blocks is None else {"max_block_elements": blocks}
    va = SmoothAPLoss(temperature=0.02, variant=variant, **kw)(a, y)
    vb = ref.dense_loss(b, y, 0.02, query_is_positive=variant == "original")
    assert va.item() == pytest.approx(vb.item(), abs=1e-12)
    va.backward()
    vb.backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-12)


def test_original_is_below_paper_and_paper_is_close_to_one_minus_map():
    # seeds.md 5.2: the query counted as its own positive (rank 1) makes the loss smaller than 1 - AP.
    x, y = blocks_batch(6, 4, dim=16, seed=5)
    paper = SmoothAPLoss(variant="paper")(x, y).item()
    original = SmoothAPLoss(variant="original")(x, y).item()
    one_minus_map = 1.0 - leave_one_out_map(x, y)
    assert original < paper
    assert 0.05 < one_minus_map < 0.9  # a non-trivial ranking
    assert paper == pytest.approx(one_minus_map, abs=0.01)  # 0.2038 vs 0.2016
    assert paper - original > 0.05  # 0.131: a third smaller


# --- pytorch-metric-learning: right only when classes per batch = samples per class -----------------

def test_pml_agrees_when_classes_equal_samples_per_class():
    x, y = blocks_batch(4, 4, seed=7, dtype=torch.float32)
    ours = SmoothAPLoss(variant="original")(x.double(), y).item()
    assert pml_losses.SmoothAPLoss(temperature=0.01)(x, y).item() == pytest.approx(ours, abs=1e-5)


def test_pml_reshapes_by_the_wrong_block_size():
    # 6 classes x 4: PML views the batch as 4 blocks of 6 items (B // #classes blocks), i.e. the original
    # rule on the labels arange(B) // 6, not on the true classes.
    x, y = blocks_batch(6, 4, seed=8, dtype=torch.float32)
    pml = pml_losses.SmoothAPLoss(temperature=0.01)(x, y).item()
    right = SmoothAPLoss(variant="original")(x.double(), y).item()
    wrong_blocks = SmoothAPLoss(variant="original")(x.double(), torch.arange(24) // 6).item()
    assert pml == pytest.approx(wrong_blocks, abs=1e-5)
    assert abs(pml - right) > 1e-3


# --- gradients ------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["paper", "original"])
@pytest.mark.parametrize("tau", [0.01, 0.2])
@pytest.mark.parametrize("blocks", [None, TINY_BLOCKS])
def test_gradcheck(variant, tau, blocks):
    x, y = make_batch((2, 3, 1, 2), dim=3, seed=20, normalize=False)
    x.requires_grad_(True)
    kw = {} if blocks is None else {"max_block_elements": blocks}
    loss = SmoothAPLoss(temperature=tau, variant=variant, **kw)
    assert torch.autograd.gradcheck(lambda e: loss(e, y), (x,))


def test_blocks_give_the_same_value_and_gradient():
    x, y = make_batch((4, 2, 5, 3, 1, 3), dim=5, seed=21)
    grads, values = [], []
    for blocks in (1 << 22, 50, 1):
        e = x.clone().requires_grad_(True)
        v = SmoothAPLoss(max_block_elements=blocks)(e, y)
        v.backward()
        values.append(v.item())
        grads.append(e.grad)
    assert values[1] == pytest.approx(values[0], abs=1e-14) and values[2] == pytest.approx(values[0], abs=1e-14)
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=1e-14)
    torch.testing.assert_close(grads[2], grads[0], rtol=0, atol=1e-14)


def test_blocks_respect_the_budget_and_cover_every_query():
    _, y = make_batch((4, 2, 5, 3, 1, 3), seed=22)
    pos = positive_mask(y)[positive_mask(y).any(1)]
    pairs = _pairs(pos, None)
    Q, N = pos.shape
    K = int(pos.sum(1).max())
    assert pairs.table.shape == (Q, K) and torch.equal(pairs.valid.sum(1), pos.sum(1))
    hits = torch.zeros(Q, N, dtype=torch.long).scatter_add_(1, pairs.table, pairs.valid.long())
    assert torch.equal(hits, pos.long())  # the valid slots are the mask, each relevant item once
    for budget in (1, 40, 100, 10 ** 6):
        blocks = _blocks(pairs, N, budget)
        covered = torch.cat([torch.arange(b.start, b.stop) for b in blocks])
        assert torch.equal(covered, torch.arange(Q))  # in order, each query once
        for b in blocks:
            assert (b.stop - b.start) * K * N <= max(budget, K * N)  # one query at least


def test_cosine_gram_matches_normalize_and_its_gradient():
    x, _ = make_batch((3, 4), dim=5, seed=34, normalize=False)
    x = torch.cat([x, torch.zeros(1, 5, dtype=x.dtype)])  # a zero row: the clamped norm
    w = torch.randn(8, 8, generator=torch.Generator().manual_seed(35), dtype=x.dtype)
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    sa = _CosineGram.apply(a)
    xn = torch.nn.functional.normalize(b, dim=1)
    sb = xn @ xn.T
    torch.testing.assert_close(sa, sb, rtol=0, atol=1e-15)
    (sa * w).sum().backward()
    (sb * w).sum().backward()
    torch.testing.assert_close(a.grad, b.grad, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(_CosineGram.apply, (x[:-1].clone().requires_grad_(True),))


# --- temperature, exact AP, extremes --------------------------------------------------------------

def untied_lists(Q=4, N=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(Q, N, generator=g, dtype=torch.float64) * 2 - 1
    rel = torch.rand(Q, N, generator=g) < 0.3
    rel[:, 0] = True
    return scores, rel


def test_exact_ap_matches_sklearn_and_loop():
    scores, rel = untied_lists()
    _, exact = smooth_ap_estimate(scores, rel, 0.01)
    for q in range(scores.shape[0]):
        assert exact[q].item() == pytest.approx(average_precision_score(rel[q].numpy(), scores[q].numpy()), abs=1e-12)
        assert exact[q].item() == pytest.approx(ref.exact_ap(scores[q].tolist(), rel[q].tolist()), abs=1e-12)


@pytest.mark.parametrize("tau", [0.5, 0.05, 0.005])
def test_smoothed_estimate_matches_loop(tau):
    scores, rel = untied_lists(seed=1)
    smoothed, _ = smooth_ap_estimate(scores, rel, tau, max_block_elements=TINY_BLOCKS)
    for q in range(scores.shape[0]):
        want = ref.smooth_ap_list(scores[q].tolist(), rel[q].tolist(), tau)
        assert smoothed[q].item() == pytest.approx(want, abs=1e-12)


def test_tau_to_zero_approaches_exact_ap():
    scores, rel = untied_lists(Q=6, N=40, seed=2)
    gaps = (scores[:, :, None] - scores[:, None, :]).abs() + torch.eye(40, dtype=torch.float64)
    assert gaps.min() > 1e-3 / 2  # untied: sigma(gap / 1e-4) is within e^-5 of the step
    _, exact = smooth_ap_estimate(scores, rel, 0.01)
    errors = [(smooth_ap_estimate(scores, rel, tau)[0] - exact).abs().max().item() for tau in (1e-1, 1e-2, 1e-3, 1e-4)]
    assert errors[-1] < 1e-3
    assert all(a > b for a, b in zip(errors, errors[1:]))  # the error shrinks with τ


def test_loss_tau_to_zero_is_one_minus_map():
    x, y = make_batch((3, 4, 2, 5), dim=4, seed=23, normalize=False)
    assert SmoothAPLoss(temperature=1e-6)(x, y).item() == pytest.approx(1.0 - leave_one_out_map(x, y), abs=1e-4)


def test_estimate_shapes_device_and_gradient():
    scores, rel = untied_lists(Q=3, N=6, seed=3)
    smoothed, exact = smooth_ap_estimate(scores[0], rel[0].long(), 0.1)
    assert smoothed.shape == () and exact.shape == ()
    assert smoothed.item() == pytest.approx(smooth_ap_estimate(scores, rel, 0.1)[0][0].item(), abs=1e-15)
    s = scores.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: smooth_ap_estimate(t, rel, 0.1)[0], (s,))
    assert not exact.requires_grad


def test_estimate_bad_inputs():
    scores, rel = untied_lists(Q=2, N=5, seed=4)
    with pytest.raises(ValueError, match="same shape"):
        smooth_ap_estimate(scores, rel[:, :4])
    with pytest.raises(ValueError, match="same shape"):
        smooth_ap_estimate(scores[None], rel[None])
    none = rel.clone()
    none[1] = False
    with pytest.raises(ValueError, match=r"rows \[1\] have no relevant item"):
        smooth_ap_estimate(scores, none)
    with pytest.raises(ValueError, match="bool or 0/1"):
        smooth_ap_estimate(scores, rel.long() * 2)
    bad = scores.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        smooth_ap_estimate(bad, rel)
    with pytest.raises(ValueError, match="floating-point"):
        smooth_ap_estimate(rel.long(), rel)
    for tau in (0.0, -0.01, float("nan"), float("inf"), True, "0.01"):
        with pytest.raises(ValueError, match="temperature"):
            smooth_ap_estimate(scores, rel, tau)
    with pytest.raises(ValueError, match="max_block_elements"):
        smooth_ap_estimate(scores, rel, 0.01, max_block_elements=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("variant", ["paper", "original"])
def test_extreme_similarities_give_finite_values_and_gradients(dtype, variant):
    # Similarities exactly +1 (copies) and -1 (opposite vectors), τ = 1e-3: D / τ up to ±2000.
    g = torch.Generator().manual_seed(24)
    base = torch.randn(3, 5, generator=g, dtype=dtype)
    x = torch.cat([base, base, -base, 1e3 * base])  # 4 copies (up to sign / scale) of 3 vectors
    y = torch.tensor([0, 1, 2, 0, 1, 2, 3, 4, 5, 3, 4, 5])
    x.requires_grad_(True)
    value = SmoothAPLoss(temperature=1e-3, variant=variant)(x, y)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()
    assert 0.0 <= value.item() <= 1.0


def test_float32_agrees_with_float64_at_a_large_batch():
    x, y = make_batch((4,) * 96, dim=32, seed=25, normalize=False)
    e32 = x.float().requires_grad_(True)
    e64 = x.clone().requires_grad_(True)
    v32, v64 = SmoothAPLoss()(e32, y), SmoothAPLoss()(e64, y)
    (v32 * 1e3).backward()
    (v64 * 1e3).backward()
    assert v32.item() == pytest.approx(v64.item(), abs=1e-5)
    torch.testing.assert_close(e32.grad.double(), e64.grad, rtol=0, atol=1e-3 * e64.grad.abs().max().item())


# --- layouts, order, bad input ------------------------------------------------------------------

@pytest.mark.parametrize("variant", ["paper", "original"])
def test_batch_order_invariance(variant, layout):
    x, y = layout
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(26))
    loss = SmoothAPLoss(variant=variant, max_block_elements=TINY_BLOCKS)
    e, ep = x.clone().requires_grad_(True), x[perm].clone().requires_grad_(True)
    v, vp = loss(e, y), loss(ep, y[perm])
    assert vp.item() == pytest.approx(v.item(), abs=1e-12)
    v.backward()
    vp.backward()
    torch.testing.assert_close(ep.grad, e.grad[perm], rtol=1e-10, atol=1e-12)


def test_singleton_queries_are_left_out_but_stay_negatives():
    x, y = make_batch((3, 3), dim=4, seed=27, normalize=False)
    lone = torch.randn(1, 4, generator=torch.Generator().manual_seed(28), dtype=torch.float64)
    with_lone = SmoothAPLoss()(torch.cat([x, lone]), torch.cat([y, torch.tensor([99])]))
    assert with_lone.item() == pytest.approx(
        ref.paper_loss(torch.cat([x, lone]).numpy(), np.r_[y.numpy(), 99], 0.01), abs=1e-10)
    assert with_lone.item() != pytest.approx(SmoothAPLoss()(x, y).item(), abs=1e-6)  # it is a negative


@pytest.mark.parametrize("variant", ["paper", "original"])
def test_no_positive_pair_gives_zero_with_warning(variant):
    x, _ = make_batch((1,) * 6, dim=4, seed=29)
    x.requires_grad_(True)
    with pytest.warns(RuntimeWarning, match="no positive pair.*all labels distinct"):
        value = SmoothAPLoss(variant=variant)(x, torch.arange(6))
    assert value.item() == 0.0 and value.requires_grad
    value.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_bad_arguments_and_inputs():
    x, y = make_batch((3, 3), seed=30)
    with pytest.raises(ValueError, match="unknown variant 'code'.*paper, original"):
        SmoothAPLoss(variant="code")
    for tau in (0.0, -1.0, float("nan"), None):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            SmoothAPLoss(temperature=tau)
    with pytest.raises(ValueError, match="max_block_elements"):
        SmoothAPLoss(max_block_elements=0)
    loss = SmoothAPLoss()
    loss.temperature = 0.0  # e.g. a schedule gone wrong: caught at the next call
    with pytest.raises(ValueError, match="temperature"):
        loss(x, y)
    with pytest.raises(ValueError, match="distinct classes"):
        SmoothAPLoss()(x, torch.zeros_like(y))
    with pytest.raises(ValueError, match="no mined indices"):
        SmoothAPLoss()(x, y, indices=(torch.tensor([0]), torch.tensor([1]), torch.tensor([3])))
    with pytest.raises(ValueError, match="integer labels"):
        SmoothAPLoss()(x, y.double())


def test_registry_and_repr():
    assert LOSSES["smooth_ap"] is SmoothAPLoss
    assert repr(make_loss("smooth_ap", variant="original")) == "SmoothAPLoss(temperature=0.01, variant='original')"


# --- temperature schedules -------------------------------------------------------------------------

def state_for(loss, step, total):
    model = torch.nn.Linear(2, 2)
    return TrainState(model=model, loss=loss, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                      device=torch.device("cpu"), loader=None, steps_per_epoch=total, total_steps=total, step=step)


@pytest.mark.parametrize("kind,mid", [("constant", 0.1), ("linear", 0.0505), ("cosine", 0.0505),
                                      ("exponential", math.sqrt(0.1 * 0.001))])
def test_schedule_values(kind, mid):
    sched = TemperatureSchedule(0.1, 0.001, kind=kind)
    assert sched.temperature_at(0, 100) == pytest.approx(0.1)
    assert sched.temperature_at(50, 100) == pytest.approx(mid)
    assert sched.temperature_at(100, 100) == pytest.approx(0.1 if kind == "constant" else 0.001)
    assert sched.temperature_at(250, 100) == sched.temperature_at(100, 100)  # held after the end
    values = [sched.temperature_at(t, 100) for t in range(101)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone from start to end
    if kind == "cosine":
        assert sched.temperature_at(25, 100) == pytest.approx(0.001 + 0.099 * (1 + math.cos(math.pi / 4)) / 2)


def test_schedule_sets_the_loss_at_fit_start_and_after_each_step():
    loss = SmoothAPLoss(temperature=0.5)
    sched = TemperatureSchedule(0.1, 0.01, kind="linear")
    assert isinstance(sched, Callback)
    sched.on_fit_start(state_for(loss, 0, 10))
    assert loss.temperature == pytest.approx(0.1)
    sched.on_step_end(state_for(loss, 4, 10))
    assert loss.temperature == pytest.approx(0.064)
    sched.on_fit_start(state_for(loss, 7, 10))  # a resumed run starts where it stopped
    assert loss.temperature == pytest.approx(0.037)
    x, y = make_batch((3, 3), seed=31)
    assert loss(x, y).item() == pytest.approx(SmoothAPLoss(temperature=0.037)(x, y).item(), abs=1e-12)


def test_schedule_explicit_loss_and_steps():
    inner = SmoothAPLoss()
    sched = TemperatureSchedule(0.05, 0.01, kind="exponential", steps=4, loss=inner)
    sched.on_step_end(state_for(torch.nn.MSELoss(), 2, 1000))  # state.loss is not the target; steps=4 wins
    assert inner.temperature == pytest.approx(math.sqrt(0.05 * 0.01))
    with pytest.raises(ValueError, match="no 'temperature' attribute.*loss="):
        TemperatureSchedule(0.1).on_step_end(state_for(torch.nn.MSELoss(), 1, 10))


def test_schedule_state_dict_round_trip_and_mismatch():
    loss = SmoothAPLoss()
    a = TemperatureSchedule(0.1, 0.01, kind="cosine")
    a.on_step_end(state_for(loss, 3, 10))
    b = TemperatureSchedule(0.1, 0.01, kind="cosine")
    b.load_state_dict(a.state_dict())
    assert b.state_dict() == a.state_dict() and b.temperature == a.temperature
    with pytest.raises(ValueError, match="resume with the same schedule"):
        TemperatureSchedule(0.1, 0.01, kind="linear").load_state_dict(a.state_dict())


def test_schedule_bad_arguments():
    with pytest.raises(ValueError, match="unknown kind 'step'.*constant, linear, cosine, exponential"):
        TemperatureSchedule(0.1, kind="step")
    with pytest.raises(ValueError, match="temperature"):
        TemperatureSchedule(0.1, 0.0)
    with pytest.raises(ValueError, match="steps"):
        TemperatureSchedule(0.1, steps=0)
    with pytest.raises(ValueError, match="total_steps"):
        TemperatureSchedule(0.1).temperature_at(0, 0)


def test_follows_device():
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        x, y = make_batch((3, 1, 4), seed=32, dtype=torch.float32)
        x = x.to(device).requires_grad_(True)
        for variant in ("paper", "original"):
            value = SmoothAPLoss(variant=variant, max_block_elements=TINY_BLOCKS)(x, y.to(device))
            value.backward()
            assert value.device.type == device and x.grad.device.type == device
        scores, rel = untied_lists(Q=2, N=5, seed=5)
        smoothed, exact = smooth_ap_estimate(scores.to(device), rel.to(device), 0.1)
        assert smoothed.device.type == device and exact.device.type == device
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning on a valid batch
        SmoothAPLoss()(*make_batch((2, 2), seed=33))
