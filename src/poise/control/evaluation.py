"""Evaluators of control agents: nominal return (utility) and return under action attacks (robustness).

Protocol: ``seeds`` evaluation seeds (``seed_base``, ``seed_base + 1``, …) × ``episodes`` episodes each;
episode ``e`` of seed ``s`` starts from ``env.reset(seed=s·1000 + e)``. The validation split (a tuning
run's ``eval_split = "val"``) shifts the seeds by ``VAL_SEED_SHIFT``, so tuning never sees the episodes
the final test numbers come from. The agent acts
deterministically. All episodes of one (attack, budget) run in lockstep as one batch, the attacker's
random draws seeded from ``seed_base``, so every number is reproducible; the seeds, reset seeds and
every episode's return are stored with the run (``eval_nominal.json``, ``eval_attacks.json``).

Metrics: ``return_mean`` / ``return_median`` over all episodes (utility);
``return_<attack>_b<b>_mean`` / ``_median`` for each attack and budget (robustness); and
``auc_<attack>_mean`` / ``_median``, the area under the return-vs-budget curve from b = 0 (the nominal
return) to the largest budget, divided by that budget (the average return over budgets, in return
units; trapezoid rule).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from poise.context import RunContext
from poise.control.action_attacks import ATTACKS, Attacker, AttackName, make_attacker
from poise.control.agents import AgentView, load_agent, torch_threads
from poise.control.envs import ActionBox, CopyMode, EnvCfg, EpisodeLog, copy_env, make_env, resolve_copy_mode
from poise.control.projections import canonical_norm, norm_name
from poise.evaluators import MetricSpec, evaluator
from poise.recipes import ModelCfg, Recipe, kind

DEFAULT_BUDGETS = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]


VAL_SEED_SHIFT = 500_000


def split_base(seed_base: int, split: str) -> int:
    """The first evaluation seed of ``split``: ``seed_base`` on test, shifted out of its range on val."""
    return seed_base + VAL_SEED_SHIFT if split == "val" else seed_base


def reset_seeds(seeds: int, episodes: int, seed_base: int) -> list[int]:
    return [(seed_base + s) * 1000 + e for s in range(seeds) for e in range(episodes)]


def budget_tag(b: float) -> str:
    return f"b{b:g}"


def rollout(view: AgentView, env_cfg: EnvCfg, seeds: list[int], attacker: Attacker | None = None, *,
            copy_mode: CopyMode = "auto", notify: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run one episode per reset seed in lockstep; returns returns, lengths, mean δ norm and timing."""
    envs = [make_env(env_cfg) for _ in seeds]
    box = ActionBox.of(envs[0])
    logs = [EpisodeLog() for _ in seeds]
    obs = np.stack([np.asarray(e.reset(seed=s)[0], dtype=np.float64) for e, s in zip(envs, seeds, strict=True)])
    for log, s in zip(logs, seeds, strict=True):
        log.reset(s)
    if attacker is not None and hasattr(attacker, "copies"):
        mode = resolve_copy_mode(envs[0], lambda: make_env(env_cfg), copy_mode, notify)
        attacker.copies = lambda i: copy_env(envs[i], mode, lambda: make_env(env_cfg), logs[i])
    n = len(seeds)
    if attacker is not None:
        for i in range(n):
            attacker.begin_episode(i)
    done = np.zeros(n, dtype=bool)
    returns = np.zeros(n)
    lengths = np.zeros(n, dtype=int)
    norms = []
    attack_time, attacked_steps = 0.0, 0
    while not done.all():
        rows = np.flatnonzero(~done)
        u = view.act(obs[rows])
        executed = u
        if attacker is not None:
            t0 = time.perf_counter()
            executed = attacker.perturb(obs[rows], u, rows.tolist())
            attack_time += time.perf_counter() - t0
            attacked_steps += len(rows)
            norms.append(np.linalg.norm(executed - u, ord=attacker.p, axis=-1))
        for r, i in enumerate(rows):
            a = box.to_env(executed[r], dtype=envs[i].action_space.dtype)
            ob, rew, term, trunc, _ = envs[i].step(a)
            logs[i].step(a)
            returns[i] += float(rew)
            lengths[i] += 1
            obs[i] = ob
            done[i] = bool(term or trunc)
    for e in envs:
        e.close()
    return {"returns": returns.tolist(), "lengths": lengths.tolist(),
            "mean_norm": float(np.concatenate(norms).mean()) if norms else 0.0,
            "attack_seconds": attack_time, "attacked_steps": attacked_steps}


def auc(budgets: list[float], values: list[float], nominal: float) -> float:
    """Area under return-vs-budget from b = 0 (nominal) to max(budgets), divided by max(budgets)."""
    order = np.argsort(budgets)
    x = np.concatenate([[0.0], np.asarray(budgets, dtype=float)[order]])
    y = np.concatenate([[nominal], np.asarray(values, dtype=float)[order]])
    return float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0) / x[-1])


class ReturnParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seeds: int = Field(5, ge=1, description="evaluation seeds")
    episodes: int = Field(10, ge=1, description="episodes per seed")
    seed_base: int = Field(1000, ge=0, description="first evaluation seed")
    split: Literal["val", "test"] = Field("test", description="val: episodes disjoint from test (tuning)")


class AttackParams(ReturnParams):
    attacks: list[AttackName] = Field(default_factory=lambda: list(ATTACKS))
    budgets: list[float] = Field(default_factory=lambda: list(DEFAULT_BUDGETS),
                                 description="fractions of the action range")
    norm: float | str = Field(2.0, description="spatial norm p: 1, 2 or inf")
    steps: int = Field(20, ge=1, description="PGD steps")
    step_size: float | None = Field(None, gt=0.0, description="PGD step as a fraction of the radius (2.5/steps)")
    random_start: bool = True
    horizon: int = Field(5, ge=1, description="LAS look-ahead H")
    temporal_norm: float | str = Field(2.0, description="LAS temporal norm q: 1, 2 or inf")
    copy_mode: CopyMode = "auto"

    @field_validator("budgets")
    @classmethod
    def _positive(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("expected at least one budget")
        for b in v:
            if not b > 0:
                raise ValueError(f"expected budgets > 0 (got {b!r})")
        return sorted(set(v))

    @field_validator("norm", "temporal_norm", mode="before")
    @classmethod
    def _norm(cls, v: Any) -> float | str:
        return canonical_norm(v)

    @field_validator("attacks")
    @classmethod
    def _some(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("expected at least one attack")
        return list(dict.fromkeys(v))


def _save_json(ctx: RunContext, name: str, payload: dict[str, Any]) -> None:
    ctx.save_file(name, json.dumps(payload, sort_keys=True).encode(), "application/json")


@evaluator("control.nominal_return",
           metrics=[MetricSpec("return_mean", "utility", "max", "mean episode return, no attack"),
                    MetricSpec("return_median", "utility", "max", "median episode return, no attack")],
           params=ReturnParams)
def nominal_return(view: AgentView, env_cfg: EnvCfg, ctx: RunContext, *, seeds: int, episodes: int,
                   seed_base: int, split: str = "test") -> dict[str, float]:
    """Return of the deterministic agent over seeds × episodes (utility)."""
    seed_base = split_base(seed_base, split)
    rs = reset_seeds(seeds, episodes, seed_base)
    out = rollout(view, env_cfg, rs)
    _save_json(ctx, "eval_nominal.json", {"env": env_cfg.env, "seeds": [seed_base + s for s in range(seeds)],
                                          "episodes": episodes, "reset_seeds": rs, "returns": out["returns"]})
    r = np.asarray(out["returns"])
    return {"return_mean": float(r.mean()), "return_median": float(np.median(r))}


@evaluator("control.attacked_return",
           metrics=[MetricSpec("return_*_mean", "robustness", "max", "mean return under an attack at a budget"),
                    MetricSpec("return_*_median", "robustness", "max", "median return under an attack at a budget"),
                    MetricSpec("auc_*", "robustness", "max", "average return over budgets 0..max (area / max)")],
           params=AttackParams)
def attacked_return(view: AgentView, env_cfg: EnvCfg, ctx: RunContext, *, seeds: int, episodes: int,
                    seed_base: int, attacks: list[str], budgets: list[float], norm: float, steps: int,
                    step_size: float | None, random_start: bool, horizon: int, temporal_norm: float,
                    copy_mode: str, split: str = "test") -> dict[str, float]:
    """Return under random δ, MAS and LAS at each budget, and the area under each curve (robustness)."""
    seed_base = split_base(seed_base, split)
    rs = reset_seeds(seeds, episodes, seed_base)
    box = view.box
    nominal = np.asarray(rollout(view, env_cfg, rs)["returns"])
    metrics: dict[str, float] = {}
    detail: dict[str, Any] = {"env": env_cfg.env, "seeds": [seed_base + s for s in range(seeds)],
                              "episodes": episodes, "reset_seeds": rs, "nominal": nominal.tolist(),
                              "budgets": budgets, "norm": norm_name(norm), "temporal_norm": norm_name(temporal_norm),
                              "horizon": horizon, "steps": steps, "attacks": {}}
    for attack in attacks:
        per_budget = {}
        for j, b in enumerate(budgets):
            attacker = make_attacker(attack, view, box, b, norm, steps=steps, step_size=step_size,
                                     random_start=random_start, horizon=horizon, temporal_norm=temporal_norm,
                                     seed=seed_base * 7919 + j * 31 + ATTACKS.index(attack))
            out = rollout(view, env_cfg, rs, attacker, copy_mode=copy_mode, notify=ctx.info)
            r = np.asarray(out["returns"])
            metrics[f"return_{attack}_{budget_tag(b)}_mean"] = float(r.mean())
            metrics[f"return_{attack}_{budget_tag(b)}_median"] = float(np.median(r))
            per_budget[str(b)] = {"returns": out["returns"], "mean_norm": out["mean_norm"],
                                  "seconds_per_step": out["attack_seconds"] / max(out["attacked_steps"], 1)}
        means = [metrics[f"return_{attack}_{budget_tag(b)}_mean"] for b in budgets]
        medians = [metrics[f"return_{attack}_{budget_tag(b)}_median"] for b in budgets]
        metrics[f"auc_{attack}_mean"] = auc(budgets, means, float(nominal.mean()))
        metrics[f"auc_{attack}_median"] = auc(budgets, medians, float(np.median(nominal)))
        detail["attacks"][attack] = per_budget
    _save_json(ctx, "eval_attacks.json", detail)
    return metrics


# --------------------------------------------------------------------------- attacking a stored agent


class StoredAgentCfg(ModelCfg):
    """The agent to attack: a recipe (trained first if missing, reused by config hash) or ``run:<id>``."""

    name: str = ""
    agent: str = Field(..., min_length=1, description="recipe path or run:<id> of a control agent")
    threads: int | None = Field(1, ge=0, description="torch intra-op threads while attacking (see AgentCfg)")


class AttackRecipe(Recipe):
    model: StoredAgentCfg


@kind("control.attack", AttackRecipe)
def run_attack(cfg: AttackRecipe, ctx: RunContext) -> None:
    """Evaluate a stored agent (nominal and under attack) without training it."""
    rec = ctx.dependency(cfg.model.agent, field="model.agent")
    tensors, meta = ctx.load_artifact(rec, "model")
    with torch_threads(cfg.model.threads):
        model, env_cfg = load_agent(tensors, meta, ctx.device)
        model.policy.set_training_mode(False)
        ctx.info(f"attacking run {rec.id} ({meta['algo']} on {meta['env']})")
        ctx.evaluate(AgentView.of(model), env_cfg)
