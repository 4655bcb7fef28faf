"""What the RL trainers here share: the reward-function contract and the per-step timing record.

A reward function is ``reward_fn(prompts, completions, labels)`` over flat lists in which each
prompt's n rollouts sit next to each other (rows ``i*n … i*n+n-1``). It returns one float per
completion, or a :class:`Rewards` with the totals and named per-step metrics (its parts) to log.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from poise.errors import UserError


@dataclass
class Rewards:
    """One reward per completion plus named scalar metrics for this batch (e.g. the reward's parts)."""

    total: list[float]
    metrics: dict[str, float] = field(default_factory=dict)


RewardFn = Callable[[list[str], list[str], list[int]], "Sequence[float] | Rewards"]


class NonFiniteRewardError(UserError):
    """A reward (or a loss built from it) became NaN or infinite: training stops before the update."""


def as_rewards(out: Sequence[float] | Rewards, expected: int) -> Rewards:
    """Normalise a reward function's output and check it has one finite value per completion."""
    rewards = out if isinstance(out, Rewards) else Rewards([float(r) for r in out])
    if len(rewards.total) != expected:
        raise ValueError(f"reward function returned {len(rewards.total)} rewards for {expected} completions")
    bad = [i for i, r in enumerate(rewards.total) if r is None or not math.isfinite(r)]
    if bad:
        raise NonFiniteRewardError(
            f"reward of completion {bad[0]} is {rewards.total[bad[0]]} "
            f"({len(bad)} of {expected} non-finite); "
            "check the reward model's scores — stopped before the update, the last checkpoint is intact",
            field="reward",
        )
    return rewards


@dataclass
class StepTiming:
    """Seconds one RL step spent sampling completions, scoring them, and everything else (update).

    ``update`` holds the log-prob/value/reference forward passes, advantages and the optimiser steps.
    """

    generation: float = 0.0
    reward: float = 0.0
    update: float = 0.0

    @property
    def total(self) -> float:
        return self.generation + self.reward + self.update

    def as_dict(self) -> dict[str, float]:
        return {
            "time_generation": self.generation,
            "time_reward": self.reward,
            "time_update": self.update,
            "time_step": self.total,
        }


def summarize_timings(timings: Sequence[StepTiming]) -> dict[str, float]:
    """Mean seconds per step of each phase and each phase's share of the step (for the bench)."""
    if not timings:
        return {}
    n = len(timings)
    mean = {k: sum(t.as_dict()[k] for t in timings) / n for k in timings[0].as_dict()}
    total = mean["time_step"] or 1.0
    for part in ("generation", "reward", "update"):
        mean[f"share_{part}"] = mean[f"time_{part}"] / total
    return mean


PhaseFn = Callable[[str], AbstractContextManager[Any]]
"""``phase(name)`` → a context manager charging its block to phase ``name`` (a run's ``ctx.phase``)."""


def no_phase(_name: str) -> AbstractContextManager[None]:
    """The default :data:`PhaseFn` outside a run: counts nothing."""
    return nullcontext()


@contextmanager
def timed(device: torch.device | str | None = None) -> Iterator[list[float]]:
    """Measure a block's wall seconds (synchronising CUDA first so queued kernels are counted)."""
    box = [0.0]
    cuda = torch.device(device).type == "cuda" if device is not None else False
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    try:
        yield box
    finally:
        if cuda:
            torch.cuda.synchronize()
        box[0] = time.perf_counter() - start
