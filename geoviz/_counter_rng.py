"""Counter-based random numbers: every value is a hash of (seed, image index, key, component).

Image ``i`` of a procedural data set therefore looks the same whether it is generated alone, in a
batch of ten thousand, or in another order, and generation is a few vectorized array operations
instead of one generator per image.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import torch

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (a bijection on 64-bit words with good avalanche)."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


class CounterRNG:
    """Random streams for a batch of image indices, keyed by name.

    ``rng.uniform("angle")`` gives one value per image; the same key always gives the same values
    for the same (seed, index), and different keys give independent values.
    """

    def __init__(self, seed: int, index: np.ndarray | torch.Tensor, namespace: str = ""):
        idx = np.asarray(index, dtype=np.int64).astype(np.uint64)
        with np.errstate(over="ignore"):
            base = _mix(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * _GOLDEN + np.uint64(0x632BE59BD9B4E019))
            self._state = _mix(base ^ (idx * _GOLDEN))
        self._ns = namespace
        self.n = len(idx)

    def child(self, namespace: str) -> CounterRNG:
        """The same images' streams under a sub-namespace: independent of every key here."""
        out = object.__new__(CounterRNG)
        out._state, out._ns, out.n = self._state, f"{self._ns}/{namespace}", self.n
        return out

    def _bits(self, key: str, k: int) -> np.ndarray:
        code = np.uint64(zlib.crc32(f"{self._ns}/{key}".encode()))
        comp = np.arange(k, dtype=np.uint64)
        with np.errstate(over="ignore"):
            z = _mix(self._state[:, None] ^ _mix(code * _GOLDEN + comp[None, :] * _M2 + np.uint64(1)))
        return z

    def uniform(self, key: str, k: int | None = None, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
        """Uniform floats in [lo, hi): shape (n,) when k is None, else (n, k)."""
        u = (self._bits(key, k or 1) >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)
        t = torch.from_numpy(lo + (hi - lo) * u).float()
        return t[:, 0] if k is None else t

    def integers(self, key: str, high: int, k: int | None = None) -> torch.Tensor:
        """Integers in [0, high)."""
        u = self.uniform(key, k)
        return torch.clamp((u * high).long(), max=high - 1)

    def bernoulli(self, key: str, p: float, k: int | None = None) -> torch.Tensor:
        return self.uniform(key, k) < p

    def normal(self, key: str, k: int | None = None) -> torch.Tensor:
        """Standard normal values (Box–Muller)."""
        u1 = self.uniform(key + "#n1", k).clamp_min(1e-12)
        u2 = self.uniform(key + "#n2", k)
        return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2 * math.pi * u2)

    def sign(self, key: str, k: int | None = None) -> torch.Tensor:
        return torch.where(self.bernoulli(key, 0.5, k), 1.0, -1.0)
