"""Seeds derived from several integers, for generators that must not share streams."""

from __future__ import annotations

import torch

_MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    """SplitMix64 finaliser: a bijective, well-mixed 64-bit hash."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def mix_seed(*values: int) -> int:
    """A 63-bit seed (valid for torch.Generator.manual_seed) from integers, hashed in turn,
    so that (a, b + 1) and (a + 1, b) give unrelated streams, unlike a + b."""
    state = 0
    for value in values:
        state = _splitmix64(state ^ (int(value) & _MASK64))
    return state >> 1


def generator(*values: int) -> torch.Generator:
    return torch.Generator(device="cpu").manual_seed(mix_seed(*values))
