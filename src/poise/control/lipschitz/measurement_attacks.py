"""Bounded attacks on the measured state, and closed-loop rollouts under them.

At every step t the policy sees x_t + δ_t with ‖δ_t‖₂ ≤ ε (the ℓ2 ball matches the ℓ2 Lipschitz
certificates) and the system moves with u_t = π(x_t + δ_t):

* ``random`` — δ_t uniform in direction, on the sphere of radius ε (the largest allowed size);
* ``pgd_action`` — projected gradient ascent on ‖π(x_t + δ) − π(x_t)‖₂ (normalised ℓ2 steps of
  2.5·ε/steps from a random start in the ball, best iterate kept per episode): the myopic worst case;
* ``pgd_cost`` — through the differentiable model of the dynamics: plans δ_t … δ_{t+H−1} to maximise
  the cost of the next H steps from the true state, applies δ_t and re-plans (receding horizon).

Rollouts record, per step, the action deviation ‖π(x_t + δ_t) − π(x_t)‖₂ on the raw policy output
(before the system clips it; clipping is 1-Lipschitz so the bound carries over), which a certified
α-Lipschitz policy keeps ≤ α·ε. Everything runs batched over episodes, in float64 when the policy is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

from poise.control.lipschitz.systems import ControlSystem

AttackName = Literal["random", "pgd_action", "pgd_cost"]
ATTACKS: tuple[str, ...] = ("random", "pgd_action", "pgd_cost")
Policy = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Rollout:
    """One batch of closed-loop episodes: total cost per episode and the per-step action deviation."""

    costs: torch.Tensor  # [B]
    deviation: torch.Tensor  # [B, T]
    delta_norm: torch.Tensor  # [B, T]
    final_state: torch.Tensor  # [B, state_dim]


def _project(delta: torch.Tensor, eps: float) -> torch.Tensor:
    n = delta.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    return delta * (eps / n).clamp(max=1.0)


def _random_in_ball(
    shape: tuple[int, ...], eps: float, gen: torch.Generator, dtype: torch.dtype, *, on_sphere: bool = False
) -> torch.Tensor:
    d = torch.randn(shape, generator=gen, dtype=dtype)
    d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    if on_sphere:
        return eps * d
    r = torch.rand((*shape[:-1], 1), generator=gen, dtype=dtype) ** (1.0 / shape[-1])
    return eps * r * d


class MeasurementAttack:
    """Chooses δ_t (‖δ_t‖₂ ≤ ε) from the true state and its measurement."""

    def __init__(self, name: str, eps: float, *, steps: int = 10, horizon: int = 5, seed: int = 0):
        if eps < 0:
            raise ValueError(f"eps must be ≥ 0 (got {eps})")
        if name not in ATTACKS:
            raise ValueError(f"unknown attack {name!r}; expected one of {ATTACKS}")
        self.name, self.eps, self.steps, self.horizon = name, float(eps), steps, horizon
        self.gen = torch.Generator().manual_seed(seed)

    def __call__(
        self, policy: Policy, system: ControlSystem, x: torch.Tensor, obs: torch.Tensor
    ) -> torch.Tensor:
        if self.eps == 0:
            return torch.zeros_like(obs)
        if self.name == "random":
            return _random_in_ball(tuple(obs.shape), self.eps, self.gen, obs.dtype, on_sphere=True)
        if self.name == "pgd_action":
            return self._pgd_action(policy, obs)
        return self._pgd_cost(policy, system, x, obs)

    def _ascend(self, objective: Callable[[torch.Tensor], torch.Tensor], delta: torch.Tensor) -> torch.Tensor:
        """ℓ2 PGD on ``objective`` (per-episode values [B]) from ``delta``; keeps each episode's best."""
        lr = 2.5 * self.eps / max(self.steps, 1)
        best = delta.detach().clone()
        with torch.no_grad():
            best_val = objective(best)
        for _ in range(self.steps):
            delta = delta.detach().requires_grad_(True)
            val = objective(delta)
            (grad,) = torch.autograd.grad(val.sum(), delta)
            with torch.no_grad():
                flat = grad.flatten(1)
                step = grad / flat.norm(dim=1).clamp_min(1e-30).view(-1, *([1] * (grad.dim() - 1)))
                delta = _project(delta + lr * step, self.eps)
                new = objective(delta)
                better = new > best_val
                best[better] = delta[better]
                best_val = torch.where(better, new, best_val)
        return best.detach()

    def _pgd_action(self, policy: Policy, obs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            u0 = policy(obs)
        start = _random_in_ball(tuple(obs.shape), self.eps, self.gen, obs.dtype)
        return self._ascend(lambda d: (policy(obs + d) - u0).square().sum(-1), start)

    def _pgd_cost(
        self, policy: Policy, system: ControlSystem, x: torch.Tensor, obs: torch.Tensor
    ) -> torch.Tensor:
        H = self.horizon

        def cost(plan: torch.Tensor) -> torch.Tensor:
            state, total = x, torch.zeros(len(x), dtype=x.dtype)
            for k in range(H):
                u = policy(system.observe(state) + plan[:, k])
                total = total + system.cost(state, u)
                state = system.step(state, u)
            return total

        start = _random_in_ball((len(obs), H, obs.shape[-1]), self.eps, self.gen, obs.dtype)
        return self._ascend(cost, start)[:, 0]


def rollout(
    system: ControlSystem,
    policy: Policy,
    x0: torch.Tensor,
    *,
    attack: MeasurementAttack | None = None,
    horizon: int | None = None,
) -> Rollout:
    """Run ``policy`` in closed loop from the states ``x0`` for ``horizon`` steps (default the system's)."""
    T = horizon or system.horizon
    x = x0
    costs = torch.zeros(len(x0), dtype=x0.dtype)
    dev = torch.zeros(len(x0), T, dtype=x0.dtype)
    dnorm = torch.zeros(len(x0), T, dtype=x0.dtype)
    for t in range(T):
        obs = system.observe(x)
        with torch.no_grad():
            u_clean = policy(obs)
        if attack is None or attack.eps == 0:
            u = u_clean
        else:
            delta = attack(policy, system, x, obs)
            with torch.no_grad():
                u = policy(obs + delta)
            dev[:, t] = (u - u_clean).norm(dim=-1)
            dnorm[:, t] = delta.norm(dim=-1)
        with torch.no_grad():
            costs += system.cost(x, u)
            x = system.step(x, u)
    return Rollout(costs, dev, dnorm, x)
