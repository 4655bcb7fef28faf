"""Behaviour cloning of an expert into a feedback policy: min (1/N) Σ ‖π(x_i) − u_i‖² s.t. lip(π) ≤ α.

``model.constraint`` picks how lip(π) ≤ α is enforced: ``none`` (plain MLP, the baseline),
``spectral`` (π = α·g, g built from spectrally normalised layers and 1-Lipschitz activations — the
constraint holds by construction) or ``laplacian`` (the primal-dual scheme of the authors' earlier
work: a k-nearest-neighbour graph on demonstration states, one multiplier λ_ij per edge for
‖π(x_i) − π(x_j)‖² ≤ α²‖x_i − x_j‖², dual ascent λ ← max(0, λ + η·violation) after every step; the
penalty Σ λ_ij‖π(x_i) − π(x_j)‖² is a weighted graph-Laplacian smoother. It only holds on the graph, so
its certified bound is whatever the weights give).

Demonstrations come from ``data.demos`` (a demos recipe or ``run:<id>``; the system and expert are the
demos run's) or from ``data.file`` (``.safetensors``/``.npz`` with ``obs`` and ``act``; the system and
expert are ``data.system`` and ``data.expert``). The expert is used only to measure regret.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import Field, field_validator, model_validator

from poise.batching import batch_indices, steps_per_epoch
from poise.context import RunContext
from poise.control.lipschitz import one_thread
from poise.control.lipschitz.demos import Demonstrations, check_demos, read_demo_file
from poise.control.lipschitz.experts import ExpertCfg, make_expert
from poise.control.lipschitz.policies import PolicyCfg, PolicyNet, build_policy, settle
from poise.control.lipschitz.systems import ControlSystem, SystemCfg, make_system
from poise.errors import UserError
from poise.recipes import DataCfg, Recipe, TrainCfg, kind


class BCDataCfg(DataCfg):
    """Where the demonstrations come from, and the initial states the policy is evaluated from."""

    name: str = "demonstrations"
    demos: str | None = Field(None, description="a control.lipschitz_demos recipe file or 'run:<id>'")
    file: Path | None = Field(
        None, description="a .safetensors or .npz file with tensors obs [N, d] and act [N, m]"
    )
    system: SystemCfg | None = Field(
        None, description="with data.file: the system (default double integrator)"
    )
    expert: ExpertCfg | None = Field(
        None, description="with data.file: the expert regret is measured against"
    )
    eval_episodes: int = Field(32, gt=0, description="initial states for the closed-loop evaluators")
    eval_seed: int = Field(12345, ge=0, lt=2**31, description="seed of the evaluation initial states (same for "
                           "every policy; a tuning run draws its own from eval_seed + VAL_SEED_SHIFT)")

    @field_validator("demos", "file", mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return None if v == "" else v  # `--set data.demos=` clears it

    @model_validator(mode="after")
    def _one_source(self) -> BCDataCfg:
        if (self.demos is None) == (self.file is None):
            raise ValueError("expected exactly one of data.demos (a recipe or run) and data.file")
        if self.demos is not None and (self.system is not None or self.expert is not None):
            raise ValueError(
                "data.system and data.expert come from the demos run; set them only with data.file"
            )
        return self


class BCTrainCfg(TrainCfg):
    """Training of the policy: an Adam-family optimiser on the mean squared action error."""

    lr: float = Field(3e-3, gt=0.0)
    batch_size: int = Field(256, gt=0)


class BCRecipe(Recipe):
    model: PolicyCfg = Field(default_factory=PolicyCfg)
    data: BCDataCfg = Field(default_factory=lambda: BCDataCfg(demos="lipschitz-demos-linear.toml"))
    train: BCTrainCfg = Field(default_factory=BCTrainCfg)


@dataclass
class PolicyEvalData:
    """What the evaluators need: the system, the expert, evaluation initial states and the training data."""

    system: ControlSystem
    expert: torch.nn.Module
    x0: torch.Tensor
    demos: Demonstrations


def load_setting(cfg: BCRecipe, ctx: RunContext) -> tuple[ControlSystem, torch.nn.Module, Demonstrations]:
    """The system, the expert and the demonstrations a BC recipe names."""
    where = str(cfg.source or "recipe")
    if cfg.data.demos is not None:
        rec = ctx.dependency(cfg.data.demos, field="data.demos")
        if rec.kind != "control.lipschitz_demos":
            raise UserError(
                f"run {rec.id} is a {rec.kind} run; expected control.lipschitz_demos",
                where=where,
                field="data.demos",
            )
        system_cfg = SystemCfg.model_validate(rec.config["data"]["system"])
        expert_cfg = ExpertCfg.model_validate(rec.config["model"])
        system = make_system(system_cfg)
        tensors, _ = ctx.load_artifact(rec, "demos")
        demos = check_demos(
            tensors.get("obs"),
            tensors.get("act"),
            obs_dim=system.obs_dim,
            act_dim=system.act_dim,
            where=where,
            field="data.demos",
        )
    else:
        system_cfg, expert_cfg = cfg.data.system or SystemCfg(), cfg.data.expert or ExpertCfg()
        system = make_system(system_cfg)
        demos = read_demo_file(
            cfg.data.file, obs_dim=system.obs_dim, act_dim=system.act_dim, where=where, field="data.file"
        )
    expert = make_expert(expert_cfg, system, ctx=ctx, where=where)
    return system, expert, demos


def knn_edges(x: torch.Tensor, k: int) -> torch.Tensor:
    """Edges (i, j), i < j, of the symmetric k-nearest-neighbour graph of the rows of ``x``."""
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    nn_idx = d.topk(min(k, len(x) - 1), largest=False).indices
    i = torch.arange(len(x)).repeat_interleave(nn_idx.shape[1])
    e = torch.stack([torch.minimum(i, nn_idx.flatten()), torch.maximum(i, nn_idx.flatten())], 1)
    e = torch.unique(e, dim=0)
    return e[(x[e[:, 0]] - x[e[:, 1]]).norm(dim=1) > 0]



VAL_SEED_SHIFT = 500_000  # validation states' seed offset: far from any test eval_seed a recipe uses


def eval_states(system: ControlSystem, data: BCDataCfg, split: str = "test") -> torch.Tensor:
    """The closed-loop evaluation initial states: drawn with ``data.eval_seed`` on the test split; a tuning
    run (``eval_split = "val"``) draws its own with ``eval_seed + VAL_SEED_SHIFT``, so tuning never scores
    the test states."""
    seed = data.eval_seed + VAL_SEED_SHIFT if split == "val" else data.eval_seed
    return system.sample_initial(data.eval_episodes, seed)

@kind("control.lipschitz_bc", BCRecipe)
@one_thread()
def run(cfg: BCRecipe, ctx: RunContext) -> None:
    """Behaviour cloning of an expert into a plain or α-Lipschitz feedback policy."""
    system, expert, demos = load_setting(cfg, ctx)
    obs, act = demos.obs.float().to(ctx.device), demos.act.float().to(ctx.device)
    policy = build_policy(cfg.model, system.obs_dim, system.act_dim).to(ctx.device)
    n, bs = len(obs), min(cfg.train.batch_size, len(obs))
    meter = ctx.meter(steps_per_epoch(n, bs))
    opt = ctx.optimizer(policy.parameters())
    sched = ctx.scheduler(opt, meter)
    laplacian = cfg.model.constraint == "laplacian"
    duals: dict[str, torch.Tensor] = {}
    if laplacian:  # the data graph and its multipliers
        g = torch.Generator().manual_seed(cfg.seed)
        pick = torch.randperm(n, generator=g)[: cfg.model.graph_points].to(ctx.device)
        gx = obs[pick]
        edges = knn_edges(gx, cfg.model.graph_k)
        gap2 = (gx[edges[:, 0]] - gx[edges[:, 1]]).square().sum(1)
        duals["lam"] = torch.zeros(len(edges), device=ctx.device)
    ctx.track(model=policy, optimizer=opt, scheduler=sched, duals=duals)
    for step in ctx.steps(meter):
        idx = batch_indices(step, n, bs, cfg.seed).to(ctx.device)
        policy.train()
        with ctx.count_flops(), ctx.phase("update"), ctx.autocast():
            loss = (policy(obs[idx]) - act[idx]).square().sum(-1).mean()
            total = loss
            if laplacian:
                out = policy(gx)
                diff2 = (out[edges[:, 0]] - out[edges[:, 1]]).square().sum(1)
                total = loss + (duals["lam"] * diff2).sum() / len(edges)
            ctx.optimizer_step(total, opt, sched)
        if laplacian:
            with torch.no_grad():
                viol = diff2.detach() / gap2 - cfg.model.alpha**2
                duals["lam"] = (duals["lam"] + cfg.model.dual_lr * viol).clamp_min(0.0)
        if step % 20 == 0:
            ctx.log_metrics({"loss": loss.item(), "lr": sched.get_last_lr()[0]}, step=step)
    settle(policy)
    policy.eval()
    x0 = eval_states(system, cfg.data, cfg.eval_split)
    ctx.evaluate(policy.cpu(), PolicyEvalData(system, expert, x0, demos))
    ctx.save_artifact(
        "model",
        {k: v.detach().cpu().contiguous() for k, v in policy.state_dict().items()},
        meta={
            "model": cfg.model.model_dump(mode="json"),
            "obs_dim": system.obs_dim,
            "act_dim": system.act_dim,
        },
    )


def load_policy(tensors: dict[str, torch.Tensor], meta: dict) -> PolicyNet:
    """Rebuild a stored policy from its artifact."""
    policy = build_policy(PolicyCfg.model_validate(meta["model"]), int(meta["obs_dim"]), int(meta["act_dim"]))
    policy.load_state_dict(tensors)
    return policy.eval()
