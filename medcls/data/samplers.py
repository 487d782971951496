"""Samplers whose order depends only on (seed, epoch), for one process or DDP.

Every process computes the same global order and takes every ``world_size``-th
index from position ``rank``; consecutive ranks' batches together form the batch
one process would see with ``world_size`` times the batch size. Training pads
the order (by wrapping around) so all processes run the same number of steps;
evaluation does not pad, so no sample is counted twice.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

__all__ = ["EpochSampler", "balanced_sample_weights"]


def balanced_sample_weights(label_sets: Sequence[Sequence[str]]) -> list[float]:
    """Per-case weights that make every class equally likely to be drawn.

    A case weighs ``1 / n`` where ``n`` is the number of cases of its rarest class
    (multi-label cases count for each of their classes); cases without a label
    (``No Finding``) form a group of their own, so they are drawn as often as one
    class rather than swamping the others.

    Args:
        label_sets: the labels of each case, in dataset order.

    Returns:
        One positive weight per case.
    """
    counts = Counter(label for labels in label_sets for label in labels)
    unlabelled = sum(1 for labels in label_sets if not labels)
    weights = []
    for labels in label_sets:
        n = min((counts[label] for label in labels), default=unlabelled)
        weights.append(1.0 / max(1, n))
    return weights


class EpochSampler(Sampler[int]):
    """Deterministic shuffling (optionally class-balanced), sharded over processes.

    Args:
        num_samples: dataset length.
        seed: base seed; the order of epoch ``e`` depends on ``(seed, e)`` only.
        shuffle: shuffle (training) or keep order (evaluation).
        weights: per-sample weights for balanced sampling with replacement
            (``None`` = a permutation).
        rank: this process's rank.
        world_size: number of processes.
        pad: repeat indices so every rank gets the same count.
    """

    def __init__(
        self,
        num_samples: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        weights: Sequence[float] | None = None,
        rank: int = 0,
        world_size: int = 1,
        pad: bool = True,
    ) -> None:
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float64)
        self.rank = rank
        self.world_size = world_size
        self.pad = pad
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the trainer before each epoch."""
        self.epoch = int(epoch)

    def global_order(self) -> np.ndarray:
        """The order of all samples in the current epoch (before sharding)."""
        if not self.shuffle:
            return np.arange(self.num_samples)
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.weights is not None:
            p = self.weights / self.weights.sum()
            return rng.choice(self.num_samples, size=self.num_samples, replace=True, p=p)
        return rng.permutation(self.num_samples)

    def __iter__(self) -> Iterator[int]:
        order = self.global_order()
        if self.pad and self.world_size > 1 and len(order) % self.world_size:
            extra = self.world_size - len(order) % self.world_size
            order = np.concatenate([order, order[:extra]])
        return iter(order[self.rank :: self.world_size].tolist())

    def __len__(self) -> int:
        if self.pad:
            return -(-self.num_samples // self.world_size)
        return len(range(self.rank, self.num_samples, self.world_size))
