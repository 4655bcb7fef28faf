"""A gymnasium environment for a discrete-time linear system with quadratic cost (default: double integrator).

x⁺ = A x + B clip(u), reward −(xᵀQx + uᵀRu), observation = state, episodes truncated after
``horizon`` steps, initial states uniform in ``[init_low, init_high]``. Registered as
``poise/DoubleIntegrator-v0`` (dt = 0.1, Q = I, R = 0.1) so SB3 agents can be trained on it.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class LinearSystemEnv(gym.Env):
    """Linear dynamics, quadratic cost, full-state observation."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        A: Any = None,
        B: Any = None,
        Q: Any = None,
        R: Any = None,
        *,
        horizon: int = 60,
        action_limit: float = 10.0,
        init_low: Any = None,
        init_high: Any = None,
        dt: float = 0.1,
    ):
        if A is None or B is None:  # the double integrator
            A, B = np.array([[1.0, dt], [0.0, 1.0]]), np.array([[dt * dt / 2], [dt]])
        self.A, self.B = np.asarray(A, np.float64), np.asarray(B, np.float64)
        n, m = self.B.shape
        self.Q = np.asarray(Q, np.float64) if Q is not None else np.eye(n)
        self.R = np.asarray(R, np.float64) if R is not None else 0.1 * np.eye(m)
        self.horizon = horizon
        self.init_low = np.asarray(init_low if init_low is not None else -np.ones(n), np.float64)
        self.init_high = np.asarray(init_high if init_high is not None else np.ones(n), np.float64)
        self.action_space = spaces.Box(-action_limit, action_limit, shape=(m,), dtype=np.float32)
        self.observation_space = spaces.Box(-np.inf, np.inf, shape=(n,), dtype=np.float32)
        self.state = np.zeros(n)
        self._t = 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        if options and "state" in options:
            self.state = np.asarray(options["state"], np.float64).copy()
        else:
            self.state = self.np_random.uniform(self.init_low, self.init_high)
        self._t = 0
        return self.state.astype(np.float32), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        u = np.clip(np.asarray(action, np.float64).reshape(-1), self.action_space.low, self.action_space.high)
        x = self.state
        cost = float(x @ self.Q @ x + u @ self.R @ u)
        self.state = self.A @ x + self.B @ u
        self._t += 1
        return self.state.astype(np.float32), -cost, False, self._t >= self.horizon, {}


def register_env() -> None:
    """Register ``poise/DoubleIntegrator-v0`` with gymnasium (idempotent)."""
    if "poise/DoubleIntegrator-v0" not in gym.registry:
        gym.register("poise/DoubleIntegrator-v0", entry_point=LinearSystemEnv)
