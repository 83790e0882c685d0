"""SoDeep's synthetic training data: score sequences of ten families and their exact ranks.

`sample_sequences(batch_size, seq_len, family="mixture")` draws a fresh `(B, n)` batch and its
target ranks (:func:`rankdml.sodeep.ranks.exact_rank`) in one vectorised pass, on any device, from
a seeded `torch.Generator` living on that device. The families are those of the original
`dataset.py` (reference section 2.2), by name; "mixture" (default) picks one family per sequence
uniformly among the ten, as the original does with ``randint(0, 9)``.
"""
from __future__ import annotations

import torch

__all__ = ["FAMILIES", "sample_sequences", "make_generator"]

#: The original's families 0-9 in its order (0/1, 5/6 and 7 repeat a law under another numpy call).
FAMILIES = (
    "uniform",                 # 0: U[-1, 1)
    "uniform_bis",             # 1: the same law (another numpy API in the original)
    "normal",                  # 2: N(0, 1)
    "sorted_ramp",             # 3: evenly spaced from a to b, a, b ~ U(0, 1) (ascending or descending)
    "shuffled_ramp",           # 4: the same ramp, shuffled
    "uniform_then_normal",     # 5: first `split` values U[-1, 1), the rest N(0, 1), split ~ U{1..n}
    "uniform_then_normal_bis", # 6: the same law
    "uniform_then_uniform",    # 7: two uniform blocks (= uniform)
    "ramp_then_uniform",       # 8: a shuffled ramp of random length `split`, then U[-1, 1)
    "fixed_ramp",              # 9: the fixed ascending ramp from -1 to 1
)
# The original's family 10 (a scaled, shifted uniform) is reachable only by a command-line flag and
# is not in its mixture; it is left out.


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A seeded generator on `device` (CUDA tensors need a CUDA generator)."""
    return torch.Generator(device=torch.device(device)).manual_seed(seed)


def _uniform(shape, g, device, dtype):
    return torch.rand(shape, generator=g, device=device, dtype=dtype) * 2 - 1


def _ramp(a, b, length, steps, dtype):
    """Rows a + (b - a) k / length for k = 0..steps-1: `arange(a, b, (b - a) / length)` cut to `steps`."""
    k = torch.arange(steps, device=a.device, dtype=dtype)
    return a[:, None] + (b - a)[:, None] * k[None, :] / length[:, None]


def _shuffle(x, g):
    perm = torch.rand(x.shape, generator=g, device=x.device).argsort(dim=-1)
    return x.gather(-1, perm)


def _family(index: int, B: int, n: int, g, device, dtype) -> torch.Tensor:
    """One (B, n) batch of family `index` (0-9)."""
    shape = (B, n)
    if index in (0, 1, 7):
        return _uniform(shape, g, device, dtype)
    if index == 2:
        return torch.randn(shape, generator=g, device=device, dtype=dtype)
    if index in (3, 4):
        a, b = (torch.rand(B, generator=g, device=device, dtype=dtype) for _ in range(2))
        ramp = _ramp(a, b, torch.full((B,), float(n), device=device, dtype=dtype), n, dtype)
        return ramp if index == 3 else _shuffle(ramp, g)
    positions = torch.arange(n, device=device)[None, :]
    split = torch.randint(1, n + 1, (B, 1), generator=g, device=device)  # U{1..n}
    head = positions < split  # (B, n): the first `split` entries of each row
    if index in (5, 6):
        return torch.where(head, _uniform(shape, g, device, dtype),
                           torch.randn(shape, generator=g, device=device, dtype=dtype))
    if index == 8:
        a, b = (torch.rand(B, generator=g, device=device, dtype=dtype) for _ in range(2))
        ramp = _ramp(a, b, split[:, 0].to(dtype), n, dtype)
        # shuffle only inside the ramp: the keys of the tail are pushed past every head key
        keys = torch.rand(shape, generator=g, device=device) + (~head).float() * 2
        ramp = ramp.gather(-1, keys.argsort(dim=-1))
        return torch.where(head, ramp, _uniform(shape, g, device, dtype))
    if index == 9:
        return _ramp(torch.full((B,), -1.0, device=device, dtype=dtype), torch.ones(B, device=device, dtype=dtype),
                     torch.full((B,), float(n), device=device, dtype=dtype), n, dtype)
    raise AssertionError(index)


def sample_sequences(batch_size: int, seq_len: int, family: str = "mixture", *,
                     generator: torch.Generator | None = None, device: str | torch.device | None = None,
                     dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw `(sequences, ranks)`, both `(batch_size, seq_len)`, from `family` ("mixture" or one of :data:`FAMILIES`).

    `ranks` are the exact descending normalised ranks of each row. `generator` fixes the draw (its
    device is used when `device` is None); the mixture picks each row's family from it too, and
    every family is drawn for the whole batch then selected row by row (ten small draws, no Python
    loop over the batch).
    """
    if batch_size < 1 or seq_len < 2:
        raise ValueError(f"need batch_size >= 1 and seq_len >= 2, got {batch_size} and {seq_len}")
    if family != "mixture" and family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose 'mixture' or one of: {', '.join(FAMILIES)}")
    if device is None:
        device = generator.device if generator is not None else torch.device("cpu")
    device = torch.device(device)
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"the generator lives on {generator.device} but the data is asked for on {device}; "
                         f"use make_generator(seed, device)")
    from rankdml.sodeep.ranks import exact_rank

    if family == "mixture":
        which = torch.randint(0, len(FAMILIES), (batch_size, 1), generator=generator, device=device)
        x = torch.zeros(batch_size, seq_len, device=device, dtype=dtype)
        for index in range(len(FAMILIES)):  # ten families, not the batch
            x = torch.where(which == index, _family(index, batch_size, seq_len, generator, device, dtype), x)
    else:
        x = _family(FAMILIES.index(family), batch_size, seq_len, generator, device, dtype)
    return x, exact_rank(x, dim=-1)
