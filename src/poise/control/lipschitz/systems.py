"""Batched, differentiable torch models of the controlled systems (a linear system, Pendulum-v1).

Everything closed-loop in this package (demonstrations, nominal and attacked rollouts, the cost
attack's look-ahead) steps these models on a batch of states at once. Each model matches its
gymnasium environment step for step (tests check it against ``Pendulum-v1`` and
:class:`~poise.control.lipschitz.linear_env.LinearSystemEnv`): same state, observation, action
clipping and stage cost, with reward = −cost.

Conventions: ``x`` is the true state ``[B, state_dim]``, ``observe(x)`` the measurement the policy
sees ``[B, obs_dim]`` (attacks perturb it), ``u`` the action ``[B, act_dim]`` before clipping; the
model clips ``u`` to the action box before using it, as the environments do.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from poise.recipes import Section

Matrix = list[list[float]]


class SystemCfg(Section):
    """Which system: ``double_integrator`` (A, B from ``dt``), ``linear`` (your A, B) or ``pendulum``.

    For the linear systems the stage cost is ``xᵀQx + uᵀRu`` (Q = I and R = 0.1·I unless given);
    Pendulum-v1 keeps gymnasium's cost. ``init_low``/``init_high`` bound the box initial states are
    drawn from (defaults: ±1 for linear systems, gymnasium's θ ∈ ±π, θ̇ ∈ ±1 for the pendulum).
    """

    name: Literal["double_integrator", "linear", "pendulum"] = "double_integrator"
    dt: float = Field(0.1, gt=0.0, description="double integrator: time step")
    A: Matrix | None = Field(None, description="linear: state matrix (n × n)")
    B: Matrix | None = Field(None, description="linear: input matrix (n × m)")
    Q: Matrix | None = Field(None, description="linear: state cost (n × n); default identity")
    R: Matrix | None = Field(None, description="linear: input cost (m × m); default 0.1·identity")
    horizon: int | None = Field(None, gt=0, description="episode length; default 60 (linear), 200 (pendulum)")
    action_limit: float | None = Field(
        None, gt=0.0, description="linear: |u_i| ≤ limit; default 10 (pendulum: 2)"
    )
    init_low: list[float] | None = None
    init_high: list[float] | None = None

    @model_validator(mode="after")
    def _shapes(self) -> SystemCfg:
        if self.name != "linear":
            for f in ("A", "B", "Q", "R"):
                if getattr(self, f) is not None:
                    raise ValueError(f"{f} is only used by the 'linear' system (got system {self.name!r})")
        else:
            if self.A is None or self.B is None:
                raise ValueError("the 'linear' system needs both A (n × n) and B (n × m)")
            n = _check_matrix(self.A, "A")
            if n[0] != n[1]:
                raise ValueError(f"A must be square (got {n[0]} × {n[1]})")
            b = _check_matrix(self.B, "B")
            if b[0] != n[0]:
                raise ValueError(f"B must have as many rows as A ({n[0]}); got {b[0]} × {b[1]}")
            if self.Q is not None and _check_matrix(self.Q, "Q") != (n[0], n[0]):
                raise ValueError(f"Q must be {n[0]} × {n[0]} like A")
            if self.R is not None and _check_matrix(self.R, "R") != (b[1], b[1]):
                raise ValueError(f"R must be {b[1]} × {b[1]} (B has {b[1]} columns)")
        dim = 2 if self.name != "linear" else len(self.A or [])
        for f in ("init_low", "init_high"):
            v = getattr(self, f)
            if v is not None and len(v) != dim:
                raise ValueError(f"{f} needs one value per state dimension ({dim}); got {len(v)}")
        if (
            self.init_low is not None
            and self.init_high is not None
            and any(lo > hi for lo, hi in zip(self.init_low, self.init_high, strict=True))
        ):
            raise ValueError("init_low must be ≤ init_high in every dimension")
        return self


def _check_matrix(m: Matrix, name: str) -> tuple[int, int]:
    if not m or not all(isinstance(r, list) for r in m):
        raise ValueError(f"{name} must be a non-empty list of rows")
    cols = {len(r) for r in m}
    if len(cols) != 1 or 0 in cols:
        raise ValueError(f"{name} rows must all have the same, non-zero length")
    return len(m), cols.pop()


class ControlSystem:
    """A discrete-time system: ``step``, ``cost`` and ``observe`` on batches, plus its initial-state box."""

    name: str
    state_dim: int
    obs_dim: int
    act_dim: int
    horizon: int
    action_limit: float
    init_low: np.ndarray
    init_high: np.ndarray

    def observe(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def clip(self, u: torch.Tensor) -> torch.Tensor:
        return u.clamp(-self.action_limit, self.action_limit)

    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def cost(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def gym_env(self):  # noqa: ANN201 - a gymnasium.Env
        raise NotImplementedError

    def sample_initial(self, n: int, seed: int, *, init: str = "uniform", noise: float = 0.0) -> torch.Tensor:
        """``n`` initial states from the box: ``uniform`` random or ``halton`` (deterministic, evenly spread),
        plus Gaussian noise of standard deviation ``noise`` (``noise = 0``: noise-free)."""
        lo, hi = self.init_low, self.init_high
        if init == "halton":
            from scipy.stats import qmc

            unit = qmc.Halton(d=len(lo), scramble=False).random(n + 1)[1:]
        else:
            unit = np.random.default_rng(seed).random((n, len(lo)))
        x = lo + unit * (hi - lo)
        if noise > 0:
            x = x + np.random.default_rng(seed + 7919).normal(0.0, noise, size=x.shape)
        return torch.tensor(x, dtype=torch.float64)


class LinearSystem(ControlSystem):
    """x⁺ = A x + B clip(u); cost xᵀQx + uᵀRu; full-state measurement."""

    def __init__(
        self,
        A: np.ndarray,
        B: np.ndarray,
        Q: np.ndarray,
        R: np.ndarray,
        *,
        horizon: int,
        action_limit: float,
        init_low: np.ndarray,
        init_high: np.ndarray,
        name: str = "linear",
    ):
        self.name = name
        self.A_np, self.B_np, self.Q_np, self.R_np = (np.asarray(m, dtype=np.float64) for m in (A, B, Q, R))
        self.A, self.B, self.Q, self.R = (
            torch.tensor(m) for m in (self.A_np, self.B_np, self.Q_np, self.R_np)
        )
        self.state_dim = self.obs_dim = self.A_np.shape[0]
        self.act_dim = self.B_np.shape[1]
        self.horizon, self.action_limit = horizon, action_limit
        self.init_low, self.init_high = np.asarray(init_low, float), np.asarray(init_high, float)

    def observe(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        u = self.clip(u)
        return x @ self.A.to(x).T + u @ self.B.to(x).T

    def cost(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        u = self.clip(u)
        return ((x @ self.Q.to(x)) * x).sum(-1) + ((u @ self.R.to(u)) * u).sum(-1)

    def gym_env(self):  # noqa: ANN201
        from poise.control.lipschitz.linear_env import LinearSystemEnv

        return LinearSystemEnv(
            self.A_np,
            self.B_np,
            self.Q_np,
            self.R_np,
            horizon=self.horizon,
            action_limit=self.action_limit,
            init_low=self.init_low,
            init_high=self.init_high,
        )


def angle_normalize(th: torch.Tensor) -> torch.Tensor:
    return ((th + math.pi) % (2 * math.pi)) - math.pi


class Pendulum(ControlSystem):
    """gymnasium's Pendulum-v1: θ̇⁺ = clip(θ̇ + (3g/2l sin θ + 3/(ml²) u) dt, ±8), θ⁺ = θ + θ̇⁺ dt.

    Measurement (cos θ, sin θ, θ̇); cost angle_normalize(θ)² + 0.1 θ̇² + 0.001 u²; |u| ≤ 2; θ = 0 upright.
    """

    name = "pendulum"
    g, m, l, dt, max_speed = 10.0, 1.0, 1.0, 0.05, 8.0
    state_dim, obs_dim, act_dim = 2, 3, 1

    def __init__(
        self, *, horizon: int = 200, init_low: np.ndarray | None = None, init_high: np.ndarray | None = None
    ):
        self.horizon, self.action_limit = horizon, 2.0
        self.init_low = np.asarray(init_low if init_low is not None else [-math.pi, -1.0], float)
        self.init_high = np.asarray(init_high if init_high is not None else [math.pi, 1.0], float)

    def observe(self, x: torch.Tensor) -> torch.Tensor:
        th, thdot = x[..., 0], x[..., 1]
        return torch.stack([torch.cos(th), torch.sin(th), thdot], -1)

    @staticmethod
    def state_of(obs: torch.Tensor) -> torch.Tensor:
        """(θ, θ̇) from a measurement (cos θ, sin θ, θ̇): θ = atan2(sin, cos)."""
        return torch.stack([torch.atan2(obs[..., 1], obs[..., 0]), obs[..., 2]], -1)

    def step(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        u = self.clip(u)[..., 0]
        th, thdot = x[..., 0], x[..., 1]
        newthdot = (
            thdot + (3 * self.g / (2 * self.l) * torch.sin(th) + 3.0 / (self.m * self.l**2) * u) * self.dt
        )
        newthdot = newthdot.clamp(-self.max_speed, self.max_speed)
        return torch.stack([th + newthdot * self.dt, newthdot], -1)

    def cost(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        u = self.clip(u)[..., 0]
        return angle_normalize(x[..., 0]) ** 2 + 0.1 * x[..., 1] ** 2 + 0.001 * u**2

    def gym_env(self):  # noqa: ANN201
        import gymnasium as gym

        return gym.make("Pendulum-v1", max_episode_steps=self.horizon)

    def linearization(self) -> tuple[np.ndarray, np.ndarray]:
        """(A, B) of the upright equilibrium under the same semi-implicit Euler step the model uses."""
        a, b, dt = 3 * self.g / (2 * self.l), 3.0 / (self.m * self.l**2), self.dt
        return np.array([[1 + dt * dt * a, dt], [dt * a, 1.0]]), np.array([[dt * dt * b], [dt * b]])


def make_system(cfg: SystemCfg) -> ControlSystem:
    """The torch model of the configured system."""
    if cfg.name == "pendulum":
        return Pendulum(horizon=cfg.horizon or 200, init_low=cfg.init_low, init_high=cfg.init_high)
    if cfg.name == "double_integrator":
        dt = cfg.dt
        A, B = np.array([[1.0, dt], [0.0, 1.0]]), np.array([[dt * dt / 2], [dt]])
    else:
        A, B = np.array(cfg.A, float), np.array(cfg.B, float)
    n, m = B.shape
    Q = np.array(cfg.Q, float) if cfg.Q is not None else np.eye(n)
    R = np.array(cfg.R, float) if cfg.R is not None else 0.1 * np.eye(m)
    lo = np.array(cfg.init_low, float) if cfg.init_low is not None else -np.ones(n)
    hi = np.array(cfg.init_high, float) if cfg.init_high is not None else np.ones(n)
    return LinearSystem(
        A,
        B,
        Q,
        R,
        horizon=cfg.horizon or 60,
        action_limit=cfg.action_limit or 10.0,
        init_low=lo,
        init_high=hi,
        name=cfg.name,
    )
