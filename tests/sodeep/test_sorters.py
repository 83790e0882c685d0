"""The sorter registry: the exact sorter against the true ranks and a loop, gradients, lengths."""
from __future__ import annotations

import math

import pytest
import torch

from rankdml.sodeep import FAMILIES, SORTERS, ExactSorter, make_generator, make_sorter, sample_sequences

from . import reference as ref

LEARNED = [n for n in SORTERS if n != "exact"]
# Family "ramp_then_uniform" puts a ramp of random length between two U(0, 1) end points next to
# U[-1, 1) values: when the end points are close, the ramp is a tight cluster that the single
# temperature c = 6.8/s (set by the whole sequence) blurs. Measured error 0.030 at n = 100.
EXACT_BOUND = {f: 0.02 for f in FAMILIES} | {"ramp_then_uniform": 0.035}


@pytest.mark.parametrize("family", FAMILIES)
def test_exact_sorter_close_to_true_ranks_n100(family):
    x, r = sample_sequences(256, 100, family, generator=make_generator(7), dtype=torch.float64)
    err = (make_sorter("exact")(x) - r).abs().mean().item()
    assert err < EXACT_BOUND[family]


@pytest.mark.parametrize("order_dependent", [False, True])
def test_exact_sorter_against_loop(order_dependent):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 9, generator=g, dtype=torch.float64)
    x[1] = x[1].sort().values  # a sorted row: where the two spreads differ
    out = make_sorter("exact", order_dependent=order_dependent)(x)
    for row, r in zip(x.tolist(), out.tolist()):
        assert r == pytest.approx(ref.exact_sorter(row, order_dependent=order_dependent), abs=1e-12)


def test_exact_sorter_permutation_equivariant_by_default():
    x = torch.randn(3, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    perm = torch.randperm(20, generator=torch.Generator().manual_seed(2))
    sorter = make_sorter("exact")
    assert torch.allclose(sorter(x[:, perm]), sorter(x)[:, perm], atol=1e-12)
    original = make_sorter("exact", order_dependent=True)
    assert not torch.allclose(original(x.sort(dim=1).values), original(x).sort(dim=1, descending=True).values)


def test_exact_sorter_gradcheck():
    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(3), dtype=torch.float64, requires_grad=True)
    # with a fixed temperature the sorter is a smooth function of x
    assert torch.autograd.gradcheck(make_sorter("exact", c=3.0), (x,))
    # the default holds c = 6.8 / s constant (as the original): its gradient is that of the fixed-c sorter
    sorter = make_sorter("exact")
    c = sorter.temperature(x)
    assert torch.autograd.gradcheck(lambda v: sorter.rank_with(v, c), (x,))
    frozen = torch.autograd.grad(sorter(x).square().sum(), x)[0]
    assert torch.allclose(frozen, torch.autograd.grad(sorter.rank_with(x, c).square().sum(), x)[0])


def test_exact_sorter_three_elements_by_hand():
    # x = (0, 1, 2): upper differences 1, 2, 1 (six zeros), s = sqrt(6 / 8), c = 6.8 / s.
    x = torch.tensor([[0.0, 1.0, 2.0]], dtype=torch.float64, requires_grad=True)
    c = 6.8 / math.sqrt(6 / 8)
    sig, dsig = (lambda z: 1 / (1 + math.exp(-z))), (lambda z: math.exp(-z) / (1 + math.exp(-z)) ** 2)
    r = make_sorter("exact")(x)
    expected = [(1 + sig(c) + sig(2 * c)) / 3, (1 + sig(c) + sig(-c)) / 3, (1 + sig(-c) + sig(-2 * c)) / 3]
    assert r[0].tolist() == pytest.approx(expected, abs=1e-12)
    r[0, 0].backward()  # the rank of the smallest entry: raising x_0 must lower (improve) it
    g = x.grad[0].tolist()
    assert g == pytest.approx([-(c / 3) * (dsig(c) + dsig(2 * c)), (c / 3) * dsig(c), (c / 3) * dsig(2 * c)], abs=1e-12)
    assert g[0] < 0 < g[1] and g[2] > 0 and all(math.isfinite(v) for v in g)


def test_constant_sequence_is_finite():
    r = make_sorter("exact")(torch.zeros(1, 5))
    assert torch.allclose(r, torch.full((1, 5), 3.0 / 5))  # every pair a tie: 1 + 4 * 1/2


@pytest.mark.parametrize("name", LEARNED)
def test_learned_sorters_shapes_and_lengths(name):
    torch.manual_seed(0)
    sorter = make_sorter(name, 12, **({"hidden": 8} if name in ("lstm_large", "lstm", "gruc", "grup", "mlp") else {}))
    x = torch.randn(3, 12)
    assert sorter(x).shape == (3, 12)
    if sorter.length_free:
        assert sorter(torch.randn(3, 7)).shape == (3, 7)
    else:
        with pytest.raises(ValueError, match="length 12"):
            sorter(torch.randn(3, 11))


def test_paper_model_size():
    # 2-layer bi-LSTM 512 (8.41 M) + position read-out 100 x 100 x 1024 (10.24 M)
    n_params = sum(p.numel() for p in make_sorter("lstm_large", 100).parameters())
    assert n_params == pytest.approx(18.65e6, rel=1e-3)


def test_registry_errors():
    with pytest.raises(ValueError, match="unknown sorter"):
        make_sorter("bitonic")
    with pytest.raises(ValueError, match="seq_len"):
        make_sorter("lstm_large")
    with pytest.raises(ValueError, match=r"shape \(B, n\)"):
        make_sorter("exact")(torch.randn(5))
    with pytest.raises(ValueError, match="NaN"):
        make_sorter("exact")(torch.tensor([[1.0, float("nan")]]))


def test_devices():
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        x = torch.randn(2, 10, device=device)
        for name in ("exact", "gruc"):
            assert make_sorter(name, 10).to(device)(x).device.type == device


def test_exact_sorter_blocks_equal_one_tensor(monkeypatch):
    x = torch.randn(7, 30, generator=torch.Generator().manual_seed(3), dtype=torch.float64, requires_grad=True)
    w = torch.randn(7, 30, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    whole = ExactSorter()(x)
    (g_whole,) = torch.autograd.grad((whole * w).sum(), x)
    monkeypatch.setattr(ExactSorter, "BLOCK_ELEMENTS", 2 * 30 * 30)  # blocks of 2 sequences
    blocked = ExactSorter()(x)
    (g_blocked,) = torch.autograd.grad((blocked * w).sum(), x)
    assert torch.equal(whole, blocked) and torch.equal(g_whole, g_blocked)
    # against the masked pairwise count written out
    c = ExactSorter().temperature(x)
    d = x[:, None, :] - x[:, :, None]
    masked = (1 + (torch.sigmoid(c[:, None, None] * d) * ~torch.eye(30, dtype=torch.bool)).sum(2)) / 30
    assert torch.allclose(whole, masked, atol=1e-14)


def test_standardized_sorter_is_scale_and_shift_free():
    from rankdml.sodeep import StandardizedSorter

    torch.manual_seed(0)
    inner = make_sorter("gruc")
    wrapped = StandardizedSorter(inner).eval()
    x = torch.randn(4, 25, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base = wrapped(x)
        assert torch.allclose(wrapped(1e-3 * x + 0.7), base, atol=1e-5)  # same ranks whatever the scale
        z = (x - x.mean(1, keepdim=True)) / x.std(1, unbiased=False, keepdim=True)
        assert torch.allclose(base, inner(z), atol=1e-6)
        assert torch.isfinite(wrapped(torch.ones(2, 25))).all()  # a constant row becomes zeros
    assert wrapped.length_free and wrapped.seq_len is None
    with pytest.raises(ValueError, match="NaN"):
        wrapped(torch.full((1, 5), float("nan")))
