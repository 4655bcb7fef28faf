"""Adversarial training against action perturbations (``control.adversarial``), and the NR-MDP baseline.

While the agent trains, an :class:`~poise.control.action_attacks.ActionAttack` wrapper inside each
training env perturbs the executed action on a share ``probability`` of the steps, with budget ``b``
(a fraction of the action range):

* ``method = "mas"`` or ``"las"`` — Lee et al.'s attacks; ``"random"`` — random δ of the same budget
  (the control: is it the adversary or just noise that helps?);
* ``method = "nr_mdp"`` — Tessler et al. (ICML 2019) noisy-robust mixing ``(1 − α)·a + α·ā`` at every
  step, ``budget`` being α (see :class:`~poise.control.action_attacks.MixAttacker` for the adversary);
  ``probability = α`` with ``budget = 1`` is their probabilistic PR-MDP.

The replay buffer (or rollout) stores the agent's own action, so the agent learns the value of its
actions under the perturbation process. The attacker differentiates a **frozen copy** of the agent,
synced from the live agent every ``sync_every`` environment steps (so the attack does not chase every
gradient update). With ``curriculum`` > 0 the budget grows linearly from ``budget_start`` to
``budget`` over that share of the training budget. *Choice*: the default starts from the nominal
expert (``model.init_from``, trained once and shared), so attacks are meaningful from the first step;
set ``init_from = ""`` to train from scratch (then a curriculum helps).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import gymnasium as gym
from pydantic import Field, field_validator, model_validator
from stable_baselines3.common.callbacks import BaseCallback

from poise.context import RunContext
from poise.control.action_attacks import ActionAttack
from poise.control.agents import AgentView
from poise.control.envs import CopyMode, make_env
from poise.control.projections import canonical_norm
from poise.control.training import ControlRecipe, train_agent
from poise.recipes import Section, kind


class AdversaryCfg(Section):
    """Who perturbs the actions during training, how often and how hard."""

    method: Literal["mas", "las", "random", "nr_mdp"] = "mas"
    probability: float = Field(0.5, ge=0.0, le=1.0, description="share of steps perturbed")
    budget: float = Field(0.3, gt=0.0, description="fraction of the action range (nr_mdp: the mixing weight alpha)")
    curriculum: float = Field(0.0, ge=0.0, le=1.0, description="share of the run over which the budget ramps up")
    budget_start: float = Field(0.0, ge=0.0, description="budget at the start of the curriculum")
    sync_every: int = Field(1000, gt=0, description="environment steps between syncs of the attacker's frozen agent")
    norm: float | str = Field(2.0, description="spatial norm: 1, 2 or inf")
    steps: int = Field(10, ge=1, description="PGD steps per attack")
    step_size: float | None = Field(None, gt=0.0, description="PGD step as a fraction of the budget radius")
    random_start: bool = True
    horizon: int = Field(5, ge=1, description="LAS look-ahead H")
    temporal_norm: float | str = Field(2.0, description="LAS temporal norm q: 1, 2 or inf")
    copy_mode: CopyMode = "auto"

    @field_validator("norm", "temporal_norm", mode="before")
    @classmethod
    def _norm(cls, v: Any) -> float | str:
        return canonical_norm(v)

    @model_validator(mode="after")
    def _alpha(self) -> AdversaryCfg:
        if self.method == "nr_mdp" and self.budget > 1:
            raise ValueError(f"nr_mdp mixes actions with weight alpha = budget in (0, 1] (got {self.budget})")
        if self.budget_start > self.budget:
            raise ValueError("budget_start must not exceed budget")
        return self


class AdversarialRecipe(ControlRecipe):
    adversary: AdversaryCfg = Field(default_factory=AdversaryCfg)


class Adversary:
    """The training-time attack: wraps each env, follows the curriculum, syncs the frozen agent."""

    def __init__(self, cfg: AdversaryCfg, recipe: ControlRecipe, seed: int, notify: Callable[[str], None]):
        self.cfg = cfg
        self.recipe = recipe
        self.seed = seed
        self.notify = notify
        self.wrappers: list[ActionAttack] = []
        self.live: AgentView | None = None
        self.frozen: AgentView | None = None
        self.total_steps: Callable[[], int | None] = lambda: None
        self.last_sync = 0

    def wrap(self, env: gym.Env, index: int) -> gym.Env:
        c = self.cfg
        attack = "mix" if c.method == "nr_mdp" else c.method
        w = ActionAttack(env, self.frozen, self.budget_at(0), c.norm,
                         attack=attack, probability=c.probability, steps=c.steps, step_size=c.step_size,
                         random_start=c.random_start, horizon=c.horizon, temporal_norm=c.temporal_norm,
                         copy_mode=c.copy_mode, make_env=lambda: make_env(self.recipe.data),
                         seed=self.seed * 7919 + index, notify=self.notify)
        self.wrappers.append(w)
        return w

    def attach(self, live: AgentView, total_steps: Callable[[], int | None]) -> None:
        self.live, self.total_steps = live, total_steps
        self.frozen = live.frozen()
        for w in self.wrappers:
            w.view = self.frozen
            if hasattr(w.attacker, "view"):
                w.attacker.view = self.frozen

    def budget_at(self, t: int) -> float:
        c = self.cfg
        total = self.total_steps()
        if c.curriculum <= 0 or not total:
            return c.budget
        frac = min(1.0, t / max(c.curriculum * total, 1.0))
        return c.budget_start + (c.budget - c.budget_start) * frac

    def update(self, t: int) -> None:
        b = self.budget_at(t)
        for w in self.wrappers:
            w.budget = b
        if self.frozen is not None and self.live is not None and t - self.last_sync >= self.cfg.sync_every:
            self.frozen.sync(self.live)
            self.last_sync = t

    def callback(self) -> BaseCallback:
        return _AdversaryCallback(self)

    def state_dict(self) -> dict[str, Any]:
        assert self.frozen is not None
        return {"frozen": self.frozen.state_dict(), "last_sync": self.last_sync,
                "attackers": [w.attacker.state_dict() for w in self.wrappers]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert self.frozen is not None
        self.frozen.load_state_dict(state["frozen"])
        self.last_sync = int(state["last_sync"])
        for w, s in zip(self.wrappers, state["attackers"], strict=True):
            w.attacker.load_state_dict(s)


class _AdversaryCallback(BaseCallback):
    def __init__(self, adversary: Adversary):
        super().__init__(verbose=0)
        self.adversary = adversary

    def _on_training_start(self) -> None:
        self.adversary.update(int(self.model.num_timesteps))

    def _on_step(self) -> bool:
        t = int(self.model.num_timesteps)
        self.adversary.update(t)
        if t % 1000 < self.training_env.num_envs:
            self.logger.record("adversary/budget", self.adversary.budget_at(t))
        return True


@kind("control.adversarial", AdversarialRecipe)
def run(cfg: AdversarialRecipe, ctx: RunContext) -> None:
    """Adversarial training: MAS/LAS (or random, or NR-MDP mixing) perturb the actions while the agent learns."""
    train_agent(cfg, ctx, Adversary(cfg.adversary, cfg, cfg.seed, ctx.info))
