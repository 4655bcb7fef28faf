"""Expert demonstrations: (measurement, action) pairs from closed-loop expert rollouts, and demo files.

``control.lipschitz_demos`` rolls the expert out from ``data.episodes`` initial states — a share
``data.noisy_fraction`` of them perturbed by Gaussian noise of std ``data.init_noise`` (the "noisy
initial states", which widen the region the data covers), the rest drawn noise-free from the
system's initial box — and stores every visited (x_t, u_t) as the safetensors artifact ``demos``
(tensors ``obs`` [N, obs_dim] and ``act`` [N, act_dim]; metadata: the system and the expert).

Demonstration files given by path hold the same two tensors, as ``.safetensors`` or ``.npz``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import Field

from poise.context import RunContext
from poise.control.lipschitz import one_thread
from poise.control.lipschitz.experts import ExpertCfg, make_expert
from poise.control.lipschitz.measurement_attacks import rollout
from poise.control.lipschitz.systems import ControlSystem, SystemCfg, make_system
from poise.errors import UserError
from poise.recipes import DataCfg, Recipe, kind


class DemoDataCfg(DataCfg):
    """The system and how many expert rollouts to record."""

    name: str = "expert_rollouts"
    system: SystemCfg = Field(default_factory=SystemCfg)
    episodes: int = Field(64, gt=0, description="number of expert rollouts N")
    noisy_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="share of rollouts from noisy initial states"
    )
    init_noise: float = Field(0.3, ge=0.0, description="std of the Gaussian noise on noisy initial states")
    horizon: int | None = Field(None, gt=0, description="steps per rollout; default the system's horizon")


class DemosRecipe(Recipe):
    model: ExpertCfg = Field(default_factory=ExpertCfg)
    data: DemoDataCfg = Field(default_factory=DemoDataCfg)


@dataclass
class Demonstrations:
    obs: torch.Tensor  # [N, obs_dim] float64
    act: torch.Tensor  # [N, act_dim] float64


@torch.no_grad()
def collect(
    system: ControlSystem,
    expert: torch.nn.Module,
    *,
    episodes: int,
    noisy_fraction: float,
    init_noise: float,
    seed: int,
    horizon: int | None = None,
) -> Demonstrations:
    """Roll ``expert`` out from clean and noisy initial states and record every (measurement, action)."""
    n_noisy = int(round(episodes * noisy_fraction))
    parts = [system.sample_initial(episodes - n_noisy, seed)] if episodes - n_noisy else []
    if n_noisy:
        parts.append(system.sample_initial(n_noisy, seed + 1, noise=init_noise))
    x = torch.cat(parts)
    obs, act = [], []
    for _ in range(horizon or system.horizon):
        o = system.observe(x)
        u = expert(o)
        obs.append(o)
        act.append(u)
        x = system.step(x, u)
    return Demonstrations(torch.cat(obs).to(torch.float64), torch.cat(act).to(torch.float64))


def check_demos(obs: Any, act: Any, *, obs_dim: int, act_dim: int, where: str, field: str) -> Demonstrations:
    """Validate demonstration tensors against the system's measurement and action sizes."""
    if obs is None or act is None:
        raise UserError("expected tensors 'obs' and 'act'", where=where, field=field)
    obs, act = torch.as_tensor(obs), torch.as_tensor(act)
    if obs.dim() != 2 or act.dim() != 2:
        raise UserError(
            f"expected 2-D 'obs' [N, {obs_dim}] and 'act' [N, {act_dim}]; got shapes "
            f"{list(obs.shape)} and {list(act.shape)}",
            where=where,
            field=field,
        )
    if len(obs) == 0:
        raise UserError("the demonstrations are empty (0 pairs)", where=where, field=field)
    if len(obs) != len(act):
        raise UserError(f"'obs' has {len(obs)} rows but 'act' has {len(act)}", where=where, field=field)
    if obs.shape[1] != obs_dim:
        raise UserError(
            f"state dimension {obs.shape[1]} does not match the system's measurement ({obs_dim})",
            where=where,
            field=field,
        )
    if act.shape[1] != act_dim:
        raise UserError(
            f"action dimension {act.shape[1]} does not match the system's ({act_dim})",
            where=where,
            field=field,
        )
    if not (torch.isfinite(obs).all() and torch.isfinite(act).all()):
        raise UserError("the demonstrations contain NaN or infinite values", where=where, field=field)
    return Demonstrations(obs.to(torch.float64), act.to(torch.float64))


def read_demo_file(path: Path, *, obs_dim: int, act_dim: int, where: str, field: str) -> Demonstrations:
    """Read a ``.safetensors`` or ``.npz`` file with tensors ``obs`` and ``act``."""
    if not path.is_file():
        raise UserError(f"no such file {str(path)!r}", where=where, field=field)
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                tensors = {k: torch.from_numpy(z[k]) for k in z.files}
        elif path.suffix == ".safetensors":
            from safetensors.torch import load_file

            tensors = load_file(str(path))
        else:
            raise UserError(
                f"expected a .safetensors or .npz file (got {path.name!r})", where=where, field=field
            )
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input
        raise UserError(
            f"cannot read {path.name!r} as {path.suffix[1:]}: {type(e).__name__}", where=where, field=field
        ) from None
    return check_demos(
        tensors.get("obs"), tensors.get("act"), obs_dim=obs_dim, act_dim=act_dim, where=where, field=field
    )


@kind("control.lipschitz_demos", DemosRecipe)
@one_thread()
def run(cfg: DemosRecipe, ctx: RunContext) -> None:
    """Record expert demonstrations (LQR, energy shaping + LQR, or a stored SB3 agent) as an artifact."""
    where = str(cfg.source or "recipe")
    system = make_system(cfg.data.system)
    expert = make_expert(cfg.model, system, ctx=ctx, where=where)
    d = cfg.data
    demos = collect(
        system,
        expert,
        episodes=d.episodes,
        noisy_fraction=d.noisy_fraction,
        init_noise=d.init_noise,
        seed=cfg.seed,
        horizon=d.horizon,
    )
    x0 = system.sample_initial(d.episodes, cfg.seed)
    cost = rollout(system, expert, x0).costs.mean().item()
    ctx.log_metrics({"expert_cost": cost}, axis="utility", direction="min")
    ctx.log_metrics({"pairs": float(len(demos.obs))}, axis="train", direction="max")
    ctx.save_artifact(
        "demos",
        {"obs": demos.obs.contiguous(), "act": demos.act.contiguous()},
        meta={
            "system": d.system.model_dump(mode="json"),
            "expert": cfg.model.model_dump(mode="json"),
            "obs_dim": system.obs_dim,
            "act_dim": system.act_dim,
        },
    )
