"""stable-baselines3 agents (PPO, SAC, TD3, DDPG): zoo-like defaults, building, saving, and the view
attacks take of them.

Defaults per (algorithm, env) follow rl-baselines3-zoo's tuned hyper-parameters (``ZOO`` below), with
two deliberate differences: observations are never normalised (``VecNormalize`` would put a moving
statistic between the attacker and the policy), and ``lin_`` schedules become poise schedules (the
recipe's ``train.schedule``, constant by default). Any env without an entry gets SB3's defaults and a
budget of 100k steps. Recipe values override: ``train.lr``, ``train.batch_size``, ``train.budget``,
``model.net_arch`` and ``model.hyper`` (any constructor argument of the SB3 class).

:class:`AgentView` is what attacks see: the deterministic action in the normalised box ``[-1, 1]^d``
and the objective the attacker minimises — ``min_i Q_i(s, u)`` over the critic heads for SAC, TD3 and
DDPG, and the policy's log-density ``log π(a(u) | s)`` for PPO (Lee et al., AAAI 2020).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, ValidationInfo, field_validator

from poise.control.envs import ActionBox
from poise.recipes import ModelCfg

Algo = Literal["ppo", "sac", "td3", "ddpg"]
OFF_POLICY = ("sac", "td3", "ddpg")
DEFAULT_STEPS = 100_000

_TD3_LIKE_PENDULUM = dict(n_timesteps=20_000, gamma=0.98, buffer_size=200_000, learning_starts=10_000,
                          noise_type="normal", noise_std=0.1, gradient_steps=1, train_freq=1, learning_rate=1e-3,
                          policy_kwargs={"net_arch": [400, 300]})
_TD3_LIKE_BOX2D = dict(gamma=0.98, buffer_size=200_000, learning_starts=10_000, noise_type="normal", noise_std=0.1,
                       gradient_steps=1, train_freq=1, learning_rate=1e-3, policy_kwargs={"net_arch": [400, 300]})

# rl-baselines3-zoo hyperparams/{sac,td3,ddpg,ppo}.yml (tuned entries), adapted as described above
ZOO: dict[tuple[str, str], dict[str, Any]] = {
    ("sac", "Pendulum-v1"): dict(n_timesteps=20_000, learning_rate=1e-3),
    ("sac", "MountainCarContinuous-v0"): dict(
        n_timesteps=50_000, learning_rate=3e-4, buffer_size=50_000, batch_size=512, ent_coef=0.1, train_freq=32,
        gradient_steps=32, gamma=0.9999, tau=0.01, learning_starts=0, use_sde=True,
        policy_kwargs={"log_std_init": -3.67, "net_arch": [64, 64]}),
    ("sac", "LunarLanderContinuous-v3"): dict(
        n_timesteps=500_000, batch_size=256, learning_rate=7.3e-4, buffer_size=1_000_000, ent_coef="auto",
        gamma=0.99, tau=0.01, train_freq=1, gradient_steps=1, learning_starts=10_000,
        policy_kwargs={"net_arch": [400, 300]}),
    ("sac", "BipedalWalker-v3"): dict(
        n_timesteps=500_000, learning_rate=7.3e-4, buffer_size=300_000, batch_size=256, ent_coef="auto",
        gamma=0.98, tau=0.02, train_freq=64, gradient_steps=64, learning_starts=10_000, use_sde=True,
        policy_kwargs={"log_std_init": -3, "net_arch": [400, 300]}),
    ("td3", "Pendulum-v1"): dict(_TD3_LIKE_PENDULUM),
    ("td3", "MountainCarContinuous-v0"): dict(
        n_timesteps=300_000, noise_type="ornstein-uhlenbeck", noise_std=0.5, gradient_steps=1, train_freq=1,
        learning_rate=1e-3, batch_size=256, policy_kwargs={"net_arch": [400, 300]}),
    ("td3", "LunarLanderContinuous-v3"): dict(_TD3_LIKE_BOX2D, n_timesteps=300_000),
    ("td3", "BipedalWalker-v3"): dict(_TD3_LIKE_BOX2D, n_timesteps=1_000_000),
    ("ddpg", "Pendulum-v1"): dict(_TD3_LIKE_PENDULUM),
    ("ddpg", "MountainCarContinuous-v0"): dict(n_timesteps=300_000, noise_type="ornstein-uhlenbeck", noise_std=0.5),
    ("ddpg", "LunarLanderContinuous-v3"): dict(_TD3_LIKE_BOX2D, n_timesteps=300_000),
    ("ddpg", "BipedalWalker-v3"): dict(_TD3_LIKE_BOX2D, n_timesteps=1_000_000),
    ("ppo", "Pendulum-v1"): dict(
        n_envs=4, n_timesteps=100_000, n_steps=1024, gae_lambda=0.95, gamma=0.9, n_epochs=10, ent_coef=0.0,
        learning_rate=1e-3, clip_range=0.2, use_sde=True, sde_sample_freq=4),
    ("ppo", "MountainCarContinuous-v0"): dict(
        n_envs=1, n_timesteps=20_000, batch_size=256, n_steps=8, gamma=0.9999, learning_rate=7.77e-5,
        ent_coef=0.00429, clip_range=0.1, n_epochs=10, gae_lambda=0.9, max_grad_norm=5, vf_coef=0.19, use_sde=True,
        policy_kwargs={"log_std_init": -3.29, "ortho_init": False}),
    ("ppo", "LunarLanderContinuous-v3"): dict(
        n_envs=16, n_timesteps=1_000_000, n_steps=1024, batch_size=64, gae_lambda=0.98, gamma=0.999, n_epochs=4,
        ent_coef=0.01),
    ("ppo", "BipedalWalker-v3"): dict(
        n_envs=32, n_timesteps=5_000_000, n_steps=2048, batch_size=64, gae_lambda=0.95, gamma=0.999, n_epochs=10,
        ent_coef=0.0, learning_rate=3e-4, clip_range=0.18),
}

ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "elu": torch.nn.ELU, "leaky_relu": torch.nn.LeakyReLU,
               "gelu": torch.nn.GELU, "silu": torch.nn.SiLU}
_EXTRA_KEYS = {"n_envs", "noise_type", "noise_std"}  # zoo keys that are not constructor arguments
_RESERVED = {"policy", "env", "learning_rate", "seed", "device", "verbose", "_init_setup_model", "tensorboard_log",
             "action_noise", "replay_buffer_class", "rollout_buffer_class"}


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` intra-op torch threads (restored after). SB3's MLPs are tiny: on a busy CPU one
    thread is many times faster than several, which spin-wait on each other for every small matmul."""
    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


def algo_class(algo: str) -> type:
    from stable_baselines3 import DDPG, PPO, SAC, TD3

    return {"ppo": PPO, "sac": SAC, "td3": TD3, "ddpg": DDPG}[algo]


def _constructor_args(algo: str) -> set[str]:
    return set(inspect.signature(algo_class(algo).__init__).parameters) - {"self"}


class AgentCfg(ModelCfg):
    """Which SB3 agent: algorithm, network sizes, extra constructor arguments, and an optional start."""

    name: str = ""
    algo: Algo = "sac"
    net_arch: list[int] | None = Field(None, description="hidden sizes of actor and critic (overrides the zoo)")
    hyper: dict[str, Any] = Field(default_factory=dict,
                                  description="SB3 constructor arguments over the zoo defaults, plus n_envs, "
                                              "noise_type (normal | ornstein-uhlenbeck) and noise_std")
    init_from: str = Field("", description="recipe (or run:<id>) of an agent to start from, e.g. the nominal expert")
    init_seed: Literal["same", "recipe"] = Field(
        "same", description="seed of the init_from recipe's run: 'same' as this run (a fine-tune of seed s starts "
                            "from the expert of seed s, so rows pair seed by seed) or the one its recipe names")
    threads: int | None = Field(1, ge=0, description="torch intra-op threads while training and attacking "
                                                     "(1: fastest for small MLPs on CPU; 0 or null: torch's default)")

    @field_validator("net_arch")
    @classmethod
    def _positive(cls, v: list[int] | None) -> list[int] | None:
        if v is not None and (not v or any(h <= 0 for h in v)):
            raise ValueError("expected a non-empty list of positive layer sizes")
        return v

    @field_validator("hyper")
    @classmethod
    def _known_arguments(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        algo = info.data.get("algo", "sac")
        allowed = (_constructor_args(algo) | _EXTRA_KEYS) - _RESERVED
        for key in v:
            if key not in allowed:
                known = ", ".join(sorted(allowed))
                raise ValueError(f"unknown {algo.upper()} argument {key!r}; expected one of: {known}"
                                 + (" (the learning rate is train.lr)" if key == "learning_rate" else ""))
        if "noise_type" in v and v["noise_type"] not in ("normal", "ornstein-uhlenbeck", None):
            raise ValueError(f"noise_type must be normal or ornstein-uhlenbeck (got {v['noise_type']!r})")
        if "n_envs" in v and (not isinstance(v["n_envs"], int) or v["n_envs"] < 1):
            raise ValueError(f"n_envs must be a positive integer (got {v['n_envs']!r})")
        if algo != "ppo" and v.get("n_envs", 1) != 1:
            raise ValueError("off-policy agents train on one environment here (n_envs = 1)")
        act = (v.get("policy_kwargs") or {}).get("activation_fn")
        if act is not None and act not in ACTIVATIONS:
            raise ValueError(f"policy_kwargs.activation_fn must be one of {', '.join(ACTIVATIONS)} (got {act!r})")
        return v


def zoo_defaults(algo: str, env_id: str) -> dict[str, Any]:
    """The zoo-like defaults of ``algo`` on ``env_id`` (SB3's own defaults when the zoo has no entry)."""
    return copy.deepcopy(ZOO.get((algo, env_id), {"n_timesteps": DEFAULT_STEPS}))


def resolve_hyper(model: AgentCfg, env_id: str, *, lr: float | None = None, batch_size: int | None = None
                  ) -> dict[str, Any]:
    """Zoo defaults, then the recipe's ``model.hyper``, ``net_arch``, ``train.lr`` and ``train.batch_size``."""
    h = zoo_defaults(model.algo, env_id)
    for k, v in model.hyper.items():
        if k == "policy_kwargs":
            h["policy_kwargs"] = {**h.get("policy_kwargs", {}), **v}
        else:
            h[k] = v
    if model.net_arch is not None:
        h.setdefault("policy_kwargs", {})["net_arch"] = list(model.net_arch)
    if lr is not None:
        h["learning_rate"] = lr
    if batch_size is not None:
        h["batch_size"] = batch_size
    h.setdefault("learning_rate", 3e-4)
    h.setdefault("n_envs", 1)
    return h


def policy_kwargs_for_sb3(pk: dict[str, Any]) -> dict[str, Any]:
    out = dict(pk)
    if "activation_fn" in out:
        out["activation_fn"] = ACTIVATIONS[out["activation_fn"]]
    return out


def make_action_noise(h: dict[str, Any], dim: int, n_envs: int) -> Any:
    from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise

    kind = h.get("noise_type")
    if kind is None:
        return None
    std = float(h.get("noise_std", 0.1))
    cls = NormalActionNoise if kind == "normal" else OrnsteinUhlenbeckActionNoise
    return cls(mean=np.zeros(dim), sigma=std * np.ones(dim))


def build_model(algo: str, env: Any, h: dict[str, Any], *, lr: float | Callable[[float], float], seed: int,
                device: torch.device | str) -> Any:
    """An SB3 model of ``algo`` on the vectorised ``env`` with resolved hyper-parameters ``h``."""
    cls = algo_class(algo)
    kwargs = {k: v for k, v in h.items() if k not in _EXTRA_KEYS | {"n_timesteps", "learning_rate"}}
    if "policy_kwargs" in kwargs:
        kwargs["policy_kwargs"] = policy_kwargs_for_sb3(kwargs["policy_kwargs"])
    if algo in OFF_POLICY:
        kwargs["action_noise"] = make_action_noise(h, env.action_space.shape[0], env.num_envs)
    return cls("MlpPolicy", env, learning_rate=lr, seed=seed, device=device, verbose=0, **kwargs)


# --------------------------------------------------------------------------- artifacts


def agent_tensors(model: Any) -> dict[str, torch.Tensor]:
    """The weights an agent artifact holds: the whole policy (actor, critics, targets) and SAC's entropy
    coefficient."""
    out = {f"policy.{k}": v for k, v in model.policy.state_dict().items()}
    log_ent = getattr(model, "log_ent_coef", None)
    if isinstance(log_ent, torch.Tensor):
        out["log_ent_coef"] = log_ent.detach()
    return out


def agent_meta(algo: str, h: dict[str, Any], env_cfg: Any) -> dict[str, Any]:
    return {"algo": algo, "env": env_cfg.env, "env_kwargs": env_cfg.kwargs,
            "max_episode_steps": env_cfg.max_episode_steps, "policy_kwargs": h.get("policy_kwargs", {}),
            "use_sde": bool(h.get("use_sde", False))}


def load_weights(model: Any, tensors: dict[str, torch.Tensor]) -> None:
    """Load an agent artifact's weights into a model built with the same algorithm and networks."""
    policy = {k.removeprefix("policy."): v for k, v in tensors.items() if k.startswith("policy.")}
    model.policy.load_state_dict(policy)
    log_ent = getattr(model, "log_ent_coef", None)
    if isinstance(log_ent, torch.Tensor) and "log_ent_coef" in tensors:
        with torch.no_grad():
            log_ent.copy_(tensors["log_ent_coef"].to(log_ent.device))


def load_agent(tensors: dict[str, torch.Tensor], meta: dict[str, Any], device: torch.device | str = "cpu"
               ) -> tuple[Any, Any]:
    """Rebuild a stored agent (weights + meta) for evaluation: returns ``(model, env_cfg)``."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from poise.control.envs import EnvCfg, make_env

    env_cfg = EnvCfg(env=meta["env"], kwargs=meta.get("env_kwargs") or {},
                     max_episode_steps=meta.get("max_episode_steps"))
    vec = DummyVecEnv([lambda: make_env(env_cfg)])
    h = {"policy_kwargs": meta.get("policy_kwargs") or {}, "use_sde": meta.get("use_sde", False)}
    if meta["algo"] in OFF_POLICY:
        h["buffer_size"] = 1
    model = build_model(meta["algo"], vec, h, lr=1e-3, seed=0, device=device)
    load_weights(model, tensors)
    return model, env_cfg


# --------------------------------------------------------------------------- what attacks see


class AgentView:
    """An SB3 agent seen from the normalised action box: deterministic actions and the attack objective.

    ``objective(obs, u)`` is what an attacker minimises over u: the smallest critic head Q(s, u) for
    SAC/TD3/DDPG (their critics take actions in [-1, 1]^d), or the log-density of the executed action
    under the PPO policy. Gradients are taken only with respect to ``u`` (``torch.autograd.grad``), so
    attacking never touches the agent's own gradients.
    """

    def __init__(self, policy: Any, algo: str, box: ActionBox):
        self.policy = policy
        self.algo = algo
        self.box = box
        self.device = policy.device
        self._low = torch.as_tensor(box.low, dtype=torch.float32, device=self.device)
        self._high = torch.as_tensor(box.high, dtype=torch.float32, device=self.device)

    @classmethod
    def of(cls, model: Any) -> AgentView:
        name = type(model).__name__.lower()
        return cls(model.policy, name, ActionBox(model.action_space.low, model.action_space.high))

    def obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic actions for a batch of observations, in [-1, 1]^d."""
        actions, _ = self.policy.predict(np.asarray(obs, dtype=np.float32), deterministic=True)
        return self.box.to_unit(actions)

    def objective(self, obs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Per-row value the attacker minimises (differentiable in ``u``)."""
        if self.algo == "ppo":
            a = self._low + (u + 1.0) * 0.5 * (self._high - self._low)
            return self.policy.get_distribution(obs).log_prob(a)
        qs = self.policy.critic(obs, u)
        return torch.min(torch.cat(qs, dim=1), dim=1).values

    def frozen(self) -> AgentView:
        """A detached copy (for the attacker during adversarial training); refresh it with :meth:`sync`."""
        policy = copy.deepcopy(self.policy, _graph_tensor_memo(self.policy))
        policy.set_training_mode(False)
        for p in policy.parameters():
            p.requires_grad_(False)
        return AgentView(policy, self.algo, self.box)

    def sync(self, source: AgentView) -> None:
        self.policy.load_state_dict(source.policy.state_dict())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.policy.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.policy.load_state_dict(state)


def _graph_tensor_memo(module: torch.nn.Module) -> dict[int, Any]:
    """A deepcopy memo mapping every non-leaf tensor a policy keeps outside its parameters to a detached
    copy. gSDE (``use_sde``) stores its exploration matrices and last distribution, computed from
    ``log_std``, on the actor's ``action_dist``; deepcopy refuses tensors inside an autograd graph, and a
    frozen copy has no use for the graph."""
    memo: dict[int, Any] = {}
    seen: set[int] = set()

    def walk(obj: Any, depth: int) -> None:
        if id(obj) in seen or depth > 4:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            if not obj.is_leaf:
                memo[id(obj)] = obj.detach().clone()
            return
        if isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v, depth + 1)
        elif isinstance(obj, dict):
            for v in obj.values():
                walk(v, depth + 1)
        elif hasattr(obj, "__dict__") and not isinstance(obj, type):
            for v in vars(obj).values():
                walk(v, depth + 1)

    for m in module.modules():
        for key, v in vars(m).items():
            if key not in ("_parameters", "_buffers", "_modules"):
                walk(v, 0)
    return memo
