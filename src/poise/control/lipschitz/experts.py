"""Experts that demonstrate: LQR (scipy's discrete ARE), energy shaping + LQR for the pendulum, SB3 agents.

Every expert maps a batch of measurements ``[B, obs_dim]`` to actions ``[B, act_dim]`` (torch). LQR
is the optimal controller of a linear system with quadratic cost: u = −K x with
K = (R + BᵀPB)⁻¹ BᵀPA, P the stabilising solution of the discrete algebraic Riccati equation.

The pendulum expert pumps energy until the pendulum nears the top, then balances with the LQR gain of
the upright linearisation (Åström–Furuta style): with E = ½θ̇² + (3g/2l)·cos θ (conserved by the
unforced pendulum; E* = 3g/2l upright at rest), u = clip(k_E (E* − E) θ̇, ±2) raises E monotonically
(dE/dt = (3/ml²) u θ̇ ≥ 0); once |θ| < ``switch_angle`` it switches to u = clip(−K x, ±2). The switch
makes the expert discontinuous, which a Lipschitz policy can only approximate — the point of the study.

An SB3 expert is any trained stable-baselines3 agent stored as a safetensors artifact of a run: the
policy's ``state_dict`` with metadata ``algo`` (``ppo``, ``sac``, ``td3``, ``a2c``, ``ddpg``) and
optionally ``policy_kwargs`` (JSON); it is rebuilt with SB3's own classes on this system's gymnasium
environment (never unpickled) and acts deterministically.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import numpy as np
import scipy.linalg
import torch
from pydantic import Field, model_validator
from torch import nn

from poise.control.lipschitz.systems import ControlSystem, LinearSystem, Pendulum, angle_normalize
from poise.errors import UserError
from poise.recipes import ModelCfg


class ExpertCfg(ModelCfg):
    """The demonstrating expert: ``lqr``, ``energy_lqr`` (pendulum) or ``sb3`` (a stored agent)."""

    name: Literal["lqr", "energy_lqr", "sb3"] = "lqr"
    lqr_q: list[float] | None = Field(
        None, description="diagonal of the LQR state weight; default the system's cost"
    )
    lqr_r: float | None = Field(None, gt=0.0, description="LQR input weight; default the system's cost")
    energy_gain: float = Field(0.5, gt=0.0, description="energy_lqr: k_E")
    switch_angle: float = Field(
        0.6, gt=0.0, le=3.1416, description="energy_lqr: |θ| (rad) below which LQR balances"
    )
    run: str | None = Field(None, description="sb3: 'run:<id>' or a recipe file that trains the agent")
    artifact: str = Field("model", description="sb3: name of the run's safetensors artifact")
    algo: str | None = Field(None, description="sb3: algorithm when the artifact's metadata does not say")

    @model_validator(mode="after")
    def _sb3_needs_run(self) -> ExpertCfg:
        if self.name == "sb3" and not self.run:
            raise ValueError("the sb3 expert needs model.run ('run:<id>' or a recipe file)")
        return self


def lqr_gain(A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray) -> np.ndarray:
    """K of the infinite-horizon discrete LQR (u = −Kx), from scipy's discrete ARE solver."""
    P = scipy.linalg.solve_discrete_are(A, B, Q, R)
    return np.linalg.solve(R + B.T @ P @ B, B.T @ P @ A)


class LQRExpert(nn.Module):
    """u = −K x (a bias-free linear layer, so certificates and attacks apply to it as to any policy)."""

    def __init__(self, K: np.ndarray):
        super().__init__()
        self.K = np.asarray(K, np.float64)
        self.linear = nn.Linear(self.K.shape[1], self.K.shape[0], bias=False, dtype=torch.float64)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor(-self.K))
        self.requires_grad_(False)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.linear(obs.to(self.linear.weight.dtype)).to(obs.dtype)


class EnergyLQRExpert(nn.Module):
    """Energy-shaping swing-up, LQR balance near the top (see the module docstring)."""

    def __init__(self, pendulum: Pendulum, K: np.ndarray, energy_gain: float, switch_angle: float):
        super().__init__()
        self.p, self.k_e, self.switch = pendulum, energy_gain, switch_angle
        self.register_buffer("K", torch.tensor(np.asarray(K, np.float64)))
        self.w0 = 3 * pendulum.g / (2 * pendulum.l)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = Pendulum.state_of(obs.to(torch.float64))
        th, thdot = angle_normalize(x[:, 0]), x[:, 1]
        energy = 0.5 * thdot**2 + self.w0 * torch.cos(th)
        swing = self.k_e * (self.w0 - energy) * thdot
        balance = -(torch.stack([th, thdot], -1) @ self.K.T)[:, 0]
        u = torch.where(th.abs() < self.switch, balance, swing)
        return self.p.clip(u[:, None]).to(obs.dtype)


_SB3_ALGOS = ("ppo", "sac", "td3", "a2c", "ddpg")


class SB3Expert(nn.Module):
    """A stable-baselines3 agent's deterministic action (not differentiable; used to demonstrate)."""

    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    @torch.no_grad()
    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        act, _ = self.model.predict(obs.detach().cpu().numpy().astype(np.float32), deterministic=True)
        return torch.as_tensor(np.asarray(act), dtype=obs.dtype).reshape(len(obs), -1)


def load_sb3_expert(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], system: ControlSystem, cfg: ExpertCfg, where: str
) -> SB3Expert:
    """Rebuild an SB3 agent from a stored policy state dict on ``system``'s environment."""
    import stable_baselines3 as sb3

    algo = str(meta.get("algo") or meta.get("algorithm") or cfg.algo or "").lower()
    if algo not in _SB3_ALGOS:
        raise UserError(
            f"cannot tell which SB3 algorithm the artifact holds (got {algo or 'nothing'}); "
            f"expected metadata 'algo' or model.algo in: {', '.join(_SB3_ALGOS)}",
            where=where,
            field="model.algo",
        )
    kwargs = meta.get("policy_kwargs") or {}
    if isinstance(kwargs, str):
        kwargs = json.loads(kwargs)
    env = system.gym_env()
    if env.observation_space.shape != (system.obs_dim,):
        raise UserError(
            f"the agent's environment observes {env.observation_space.shape}, the system {system.obs_dim}",
            where=where,
            field="model.run",
        )
    cls = getattr(sb3, algo.upper())
    model = cls("MlpPolicy", env, policy_kwargs=dict(kwargs), device="cpu", seed=0)
    try:
        model.policy.load_state_dict(tensors)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "mismatch"
        raise UserError(
            f"the artifact is not a {algo.upper()} MlpPolicy for this system: {first}",
            where=where,
            field="model.run",
        ) from None
    model.policy.set_training_mode(False)
    return SB3Expert(model)


def make_expert(
    cfg: ExpertCfg, system: ControlSystem, *, ctx: Any = None, where: str = "recipe"
) -> nn.Module:
    """The expert ``cfg`` names, for ``system`` (the SB3 expert loads its run through ``ctx``)."""
    if cfg.name == "sb3":
        if ctx is None:
            raise UserError(
                "the sb3 expert needs a run context to load its agent", where=where, field="model.run"
            )
        rec = ctx.dependency(cfg.run, field="model.run")
        tensors, meta = ctx.load_artifact(rec, cfg.artifact)
        return load_sb3_expert(tensors, meta, system, cfg, where)
    if cfg.name == "energy_lqr":
        if not isinstance(system, Pendulum):
            raise UserError(
                f"the energy_lqr expert swings up the pendulum; expected data.system.name = 'pendulum' "
                f"(got {system.name!r})",
                where=where,
                field="model.name",
            )
        A, B = system.linearization()
        Q = np.diag(cfg.lqr_q) if cfg.lqr_q else np.diag([1.0, 0.1])
        R = np.array([[cfg.lqr_r if cfg.lqr_r else 0.001]])
        _check_q(Q, 2, where)
        return EnergyLQRExpert(system, lqr_gain(A, B, Q, R), cfg.energy_gain, cfg.switch_angle)
    # lqr
    if isinstance(system, LinearSystem):
        A, B = system.A_np, system.B_np
        Q = np.diag(cfg.lqr_q) if cfg.lqr_q else system.Q_np
        R = cfg.lqr_r * np.eye(system.act_dim) if cfg.lqr_r else system.R_np
        _check_q(Q, system.state_dim, where)
        try:
            return LQRExpert(lqr_gain(A, B, Q, R))
        except (np.linalg.LinAlgError, ValueError) as e:
            raise UserError(
                f"no stabilising LQR solution for this (A, B, Q, R): {e}", where=where, field="data.system"
            ) from None
    raise UserError(
        "the lqr expert needs a linear system; for the pendulum use model.name = 'energy_lqr'",
        where=where,
        field="model.name",
    )


def _check_q(Q: np.ndarray, n: int, where: str) -> None:
    if Q.shape != (n, n):
        raise UserError(
            f"expected {n} values (one per state dimension); got {Q.shape[0]}",
            where=where,
            field="model.lqr_q",
        )
