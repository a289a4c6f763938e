"""Seeds that depend only on (seed, epoch, stream), so that a resumed run repeats an uninterrupted one."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

__all__ = ["SHUFFLE", "GLOBAL", "SETTLE", "CLASS_MEANS", "derived_seed", "epoch_generator",
           "seeded_global_rng"]

# The independent random streams of a run.
SHUFFLE, GLOBAL, SETTLE, CLASS_MEANS = 0, 1, 2, 3


def derived_seed(seed: int, epoch: int, stream: int) -> int:
    """A 63-bit seed that depends only on (seed, epoch, stream)."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(stream)]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def epoch_generator(seed: int, epoch: int, stream: int = SHUFFLE) -> torch.Generator:
    """The CPU generator that ``fit`` hands to ``BatchSource.epoch`` (depends only on its arguments)."""
    return torch.Generator().manual_seed(derived_seed(seed, epoch, stream))


@contextlib.contextmanager
def seeded_global_rng(seed: int, epoch: int, stream: int, device: torch.device) -> Iterator[None]:
    """Run a block with the global torch RNG seeded from (seed, epoch, stream); the caller's RNG is restored."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(derived_seed(seed, epoch, stream))
        yield
