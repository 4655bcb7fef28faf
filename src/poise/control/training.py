"""Training an SB3 agent through a poise recipe (``control.agent``): the nominal agent, and the shared
loop the adversarial kinds reuse.

Reads top to bottom: resolve hyper-parameters (zoo defaults, then the recipe), the budget in
environment steps, the envs (wrapped by an adversary when there is one), the model with a poise
learning-rate schedule, an optional warm start from another agent's artifact (``model.init_from``, a
shared artifact trained once through ``ctx.dependency``, with this run's seed unless ``model.init_seed``
says otherwise), then SB3's loop under poise's budget and
checkpoints (:mod:`poise.control.sb3_loop`), the recipe's evaluators and the agent artifact.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv

from poise.context import RunContext
from poise.control.agents import (
    AgentCfg,
    AgentView,
    agent_meta,
    agent_tensors,
    build_model,
    load_weights,
    resolve_hyper,
    torch_threads,
)
from poise.control.envs import EnvCfg, make_env
from poise.control.sb3_loop import SB3State, learn, lr_callable
from poise.errors import UserError
from poise.recipes import BudgetCfg, Recipe, ScheduleCfg, TrainCfg, kind


class ControlTrainCfg(TrainCfg):
    """Budget (environment steps, or seconds/kWh/CO2), schedule and checkpoints of an SB3 agent.

    ``lr`` and ``batch_size`` default to the zoo values; ``budget`` defaults to the zoo's step count.
    SB3 trains with Adam in fp32, so ``optimizer`` is always adam and momentum/nesterov/amp are unused;
    ``weight_decay`` goes to Adam and ``grad_clip`` is PPO's ``max_grad_norm``.
    """

    optimizer: Literal["adam"] = "adam"
    lr: float | None = Field(None, gt=0.0, description="learning rate (default: the zoo's)")
    batch_size: int | None = Field(None, gt=0, description="SB3 batch size (default: the zoo's)")
    amp: Literal[False] = False
    schedule: ScheduleCfg = Field(default_factory=lambda: ScheduleCfg(name="constant"))
    budget: BudgetCfg | None = Field(None, description="environment steps (default: the zoo's n_timesteps)")
    checkpoint_every: int = Field(5000, gt=0, description="environment steps between checkpoints")

    @field_validator("budget")
    @classmethod
    def _env_steps(cls, v: BudgetCfg | None) -> BudgetCfg | None:
        if v is not None and v.unit == "epochs":
            raise ValueError("RL agents count environment steps; expected steps, seconds, kwh or co2_g")
        return v


class ControlRecipe(Recipe):
    model: AgentCfg = Field(default_factory=AgentCfg)
    data: EnvCfg = Field(default_factory=EnvCfg)
    train: ControlTrainCfg = Field(default_factory=ControlTrainCfg)


def resolved_train(cfg: ControlRecipe) -> tuple[dict[str, Any], TrainCfg]:
    """The SB3 hyper-parameters and a TrainCfg whose budget is set (zoo default when the recipe has none)."""
    h = resolve_hyper(cfg.model, cfg.data.env, lr=cfg.train.lr, batch_size=cfg.train.batch_size)
    if cfg.train.weight_decay:
        h.setdefault("policy_kwargs", {}).setdefault("optimizer_kwargs", {})["weight_decay"] = cfg.train.weight_decay
    if cfg.train.grad_clip is not None:
        if cfg.model.algo != "ppo":
            raise UserError("grad_clip is PPO's max_grad_norm; SAC, TD3 and DDPG do not clip",
                            where=cfg.source or "recipe", field="train.grad_clip")
        h["max_grad_norm"] = cfg.train.grad_clip
    budget = cfg.train.budget or BudgetCfg(steps=int(h["n_timesteps"]))
    return h, TrainCfg(**{**cfg.train.model_dump(exclude={"budget", "lr", "batch_size", "optimizer", "amp"}),
                          "budget": budget, "lr": h["learning_rate"]})


def warm_start(cfg: ControlRecipe, ctx: RunContext, model: Any, h: dict[str, Any]) -> str:
    """Load the weights of ``model.init_from`` (trained first if the store has no such run), by default the
    run of that recipe with this run's seed (``model.init_seed``)."""
    where = cfg.source or "recipe"
    same = cfg.model.init_seed == "same" and not cfg.model.init_from.startswith("run:")
    start = ctx.dependency(cfg.model.init_from, field="model.init_from", overrides={"seed": cfg.seed} if same else None)
    tensors, meta = ctx.load_artifact(start, "model")
    mine = agent_meta(cfg.model.algo, h, cfg.data)
    for key in ("algo", "env", "policy_kwargs", "use_sde"):
        if meta.get(key) != mine[key]:
            raise UserError(f"run {start.id} has {key} = {meta.get(key)!r}, this recipe {mine[key]!r}; a warm start "
                            "needs the same algorithm, env and networks", where=where, field="model.init_from")
    load_weights(model, tensors)
    return start.id


def build_envs(cfg: ControlRecipe, n_envs: int, wrap: Any = None) -> DummyVecEnv:
    """``n_envs`` copies of the recipe's env (each optionally wrapped by an adversary), with SB3's Monitor."""

    def factory(i: int) -> Any:
        def make() -> Any:
            env = make_env(cfg.data)
            if wrap is not None:
                env = wrap(env, i)
            return Monitor(env)

        return make

    return DummyVecEnv([factory(i) for i in range(n_envs)])


def train_agent(cfg: ControlRecipe, ctx: RunContext, adversary: Any = None) -> Any:
    """Train (or resume) the recipe's agent, optionally against ``adversary``; evaluate and store it."""
    with torch_threads(cfg.model.threads):
        return _train_agent(cfg, ctx, adversary)


def _train_agent(cfg: ControlRecipe, ctx: RunContext, adversary: Any) -> Any:
    h, train = resolved_train(cfg)
    meter = ctx.meter(train=train)
    clock: dict[str, Any] = {}
    lr = lr_callable(train.schedule, float(h["learning_rate"]), meter, clock)
    envs = build_envs(cfg, int(h["n_envs"]), wrap=adversary.wrap if adversary is not None else None)
    model = build_model(cfg.model.algo, envs, h, lr=lr, seed=cfg.seed, device=ctx.device)
    clock["model"] = model
    if cfg.model.init_from:
        ctx.info(f"warm start from run {warm_start(cfg, ctx, model, h)}")
    extras = {}
    if adversary is not None:
        adversary.attach(AgentView.of(model), lambda: meter.total_steps)
        extras["adversary"] = adversary
    state = SB3State(model, extras)
    ctx.track(sb3=state)
    learn(ctx, model, meter, state, lr=lr, callbacks=[adversary.callback()] if adversary is not None else [])
    model.policy.set_training_mode(False)
    ctx.evaluate(AgentView.of(model), cfg.data)
    ctx.save_artifact("model", agent_tensors(model), meta=agent_meta(cfg.model.algo, h, cfg.data))
    envs.close()
    return model


@kind("control.agent", ControlRecipe)
def run(cfg: ControlRecipe, ctx: RunContext) -> None:
    """An SB3 agent (PPO, SAC, TD3, DDPG) trained on its own actions: the nominal expert."""
    train_agent(cfg, ctx)
