"""Gymnasium environments: which ones poise accepts, their action box, copies for look-ahead, and state.

* Any registered gymnasium id with continuous (``Box``) actions; classic control (Pendulum-v1,
  MountainCarContinuous-v0) ships with gymnasium, the Box2D tasks (LunarLanderContinuous-v3,
  BipedalWalker-v3) need the ``poise[box2d]`` extra.
* Attacks work in the **normalised action box** ``[-1, 1]^d`` (SB3's own scaling for SAC/TD3/DDPG):
  a budget ``b`` is a fraction of each dimension's action range, i.e. a radius of ``2b`` there.
* Look-ahead attacks need a copy of an environment in its current state. Classic-control envs are
  deep-copied; any other env is first probed on a fresh instance (two deep copies must step alike and
  independently); if that fails the copy is rebuilt by **replay** — a fresh env reset with the
  episode's seed and stepped through the executed actions (exact for deterministic-given-seed envs,
  and its cost grows with the episode step).
* Checkpoints of a training run hold the state of classic-control envs (every plain attribute of
  each wrapper and the env, with its RNG), so a resumed run continues the very same episodes.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from poise.recipes import DataCfg

CopyMode = Literal["auto", "deepcopy", "replay"]

# Box2D tasks live behind the poise[box2d] extra (gymnasium[box2d]: Box2D and pygame)
BOX2D_HINT = "install the box2d extra: pip install 'poise[box2d]'"


class EnvCfg(DataCfg):
    """Which environment: a registered gymnasium id with continuous actions, its kwargs, episode length."""

    name: str = Field("gymnasium", description="free label; the environment is `env`")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of gymnasium.make")
    env: str = Field("Pendulum-v1", description="registered gymnasium id with a Box action space")
    max_episode_steps: int | None = Field(None, gt=0, description="override the env's time limit")

    @field_validator("env")
    @classmethod
    def _registered_continuous(cls, v: str, info: ValidationInfo) -> str:
        check_env(v, tuple(sorted((info.data.get("kwargs") or {}).items(), key=lambda kv: kv[0])))
        return v


def _freeze(kwargs: dict[str, Any] | tuple) -> tuple:
    return kwargs if isinstance(kwargs, tuple) else tuple(sorted(kwargs.items(), key=lambda kv: kv[0]))


@lru_cache(maxsize=64)
def check_env(env_id: str, kwargs: tuple = ()) -> tuple[np.ndarray, np.ndarray]:
    """The action box (low, high) of ``env_id``; ValueError (one line) when it is unknown,
    needs a missing extra, or has no continuous actions."""
    try:
        gym.spec(env_id)
    except gym.error.Error as e:
        raise ValueError(f"unknown gymnasium env {env_id!r}: {e}; expected a registered id such as Pendulum-v1"
                         ) from None
    try:
        env = gym.make(env_id, **dict(kwargs))
    except gym.error.DependencyNotInstalled:
        raise ValueError(f"{env_id} needs Box2D; {BOX2D_HINT}") from None
    except ImportError as e:
        raise ValueError(f"{env_id} cannot be created ({e})") from None
    except TypeError as e:
        raise ValueError(f"{env_id} rejects its kwargs ({e})") from None
    try:
        space = env.action_space
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(f"{env_id} has {space} actions; action attacks need continuous (Box) actions, "
                             "e.g. Pendulum-v1 or MountainCarContinuous-v0")
        if not (np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise ValueError(f"{env_id} has an unbounded action box; attack budgets are fractions of its range")
        if not isinstance(env.observation_space, gym.spaces.Box):
            raise ValueError(f"{env_id} has {env.observation_space} observations; expected a Box (vector) observation")
        return space.low.astype(np.float64), space.high.astype(np.float64)
    finally:
        env.close()


def make_env(cfg: EnvCfg) -> gym.Env:
    """A fresh environment of the recipe (time limit overridden when asked)."""
    extra = {"max_episode_steps": cfg.max_episode_steps} if cfg.max_episode_steps else {}
    return gym.make(cfg.env, **cfg.kwargs, **extra)


def env_factory(cfg: EnvCfg) -> Callable[[], gym.Env]:
    return lambda: make_env(cfg)


# --------------------------------------------------------------------------- the normalised action box


class ActionBox:
    """Maps env actions to the normalised box [-1, 1]^d and back (SB3's ``scale_action`` convention)."""

    def __init__(self, low: np.ndarray, high: np.ndarray):
        self.low = np.asarray(low, dtype=np.float64)
        self.high = np.asarray(high, dtype=np.float64)
        self.dim = int(self.low.size)

    @classmethod
    def of(cls, env: gym.Env) -> ActionBox:
        return cls(env.action_space.low, env.action_space.high)

    def to_unit(self, a: np.ndarray) -> np.ndarray:
        return np.clip(2.0 * (np.asarray(a, dtype=np.float64) - self.low) / (self.high - self.low) - 1.0, -1.0, 1.0)

    def to_env(self, u: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        u = np.clip(np.asarray(u, dtype=np.float64), -1.0, 1.0)
        return (self.low + (u + 1.0) * 0.5 * (self.high - self.low)).astype(dtype)

    @staticmethod
    def radius(budget: float) -> float:
        """A budget ``b`` (fraction of the action range) as a radius in the normalised box (range 2)."""
        return 2.0 * float(budget)


# --------------------------------------------------------------------------- copies for look-ahead


def _is_classic_control(env: gym.Env) -> bool:
    return type(env.unwrapped).__module__.startswith("gymnasium.envs.classic_control")


def _probe_deepcopy(make: Callable[[], gym.Env], steps: int = 3) -> bool:
    """Whether deep copies of this kind of env are faithful and independent (probed on a fresh env)."""
    try:
        env = make()
        env.reset(seed=12345)
        actions = [env.action_space.sample() for _ in range(steps)]
        a, b = copy.deepcopy(env), copy.deepcopy(env)
        ra = [a.step(x)[:2] for x in actions]
        rb = [b.step(x)[:2] for x in actions]
        c = copy.deepcopy(env)  # stepping a and b must not have moved env
        rc = [c.step(x)[:2] for x in actions]
        env.close()
        return all(np.allclose(o1, o2) and np.allclose(o1, o3) and r1 == r2 == r3
                   for (o1, r1), (o2, r2), (o3, r3) in zip(ra, rb, rc, strict=True))
    except Exception:  # noqa: BLE001 - any failure means "not copyable"
        return False


_COPY_MODES: dict[str, str] = {}
_TOLD: set[str] = set()


def resolve_copy_mode(env: gym.Env, make: Callable[[], gym.Env], mode: CopyMode = "auto",
                      notify: Callable[[str], None] | None = None) -> str:
    """``deepcopy`` or ``replay`` for this env; the fall-back to replay is announced once per env id."""
    env_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    if mode == "replay":
        return "replay"
    if env_id not in _COPY_MODES:
        ok = _is_classic_control(env) or _probe_deepcopy(make)
        _COPY_MODES[env_id] = "deepcopy" if ok else "replay"
    chosen = _COPY_MODES[env_id]
    if chosen == "replay" and env_id not in _TOLD:
        _TOLD.add(env_id)
        msg = (f"LAS: {env_id} cannot be deep-copied faithfully; look-ahead copies are rebuilt by seed + action "
               "replay (exact for deterministic envs; costs grow with the episode step)")
        (notify or (lambda m: warnings.warn(m, stacklevel=3)))(msg)
    return chosen


class EpisodeLog:
    """What replay needs to rebuild an env: the seed of its last reset and the actions executed since."""

    def __init__(self) -> None:
        self.seed: int | None = None
        self.actions: list[np.ndarray] = []

    def reset(self, seed: int) -> None:
        self.seed = int(seed)
        self.actions = []

    def step(self, action: np.ndarray) -> None:
        self.actions.append(np.array(action, copy=True))


def copy_env(env: gym.Env, mode: str, make: Callable[[], gym.Env], log: EpisodeLog | None) -> gym.Env:
    """An independent env in ``env``'s current state: a deep copy, or a fresh env replayed from ``log``."""
    if mode == "deepcopy":
        return copy.deepcopy(env)
    if log is None or log.seed is None:
        raise RuntimeError("replay needs the seed of the episode's reset")
    twin = make()
    twin.reset(seed=log.seed)
    for a in log.actions:
        twin.step(a)
    return twin


# --------------------------------------------------------------------------- env state for checkpoints

_SKIP = {"env", "spec", "_cached_spec", "metadata", "_metadata", "action_space", "observation_space",
         "_action_space", "_observation_space", "_saved_kwargs", "render_mode", "screen", "clock", "viewer",
         "results_writer", "agent", "attacker", "target"}


def supports_exact_state(env: gym.Env) -> bool:
    """Envs whose whole state is plain data (numbers, arrays, RNGs): gymnasium's classic control."""
    return _is_classic_control(env)


def _plain(v: Any) -> bool:
    if v is None or isinstance(v, bool | int | float | str | np.ndarray | np.generic):
        return True
    if isinstance(v, list | tuple):
        return all(_plain(x) for x in v)
    if isinstance(v, dict):
        return all(isinstance(k, str) and _plain(x) for k, x in v.items())
    return False


def _layers(env: gym.Env) -> list[Any]:
    out, cur = [], env
    while True:
        out.append(cur)
        if not hasattr(cur, "env") or cur is getattr(cur, "env", None):
            return out
        cur = cur.env


def env_state(env: gym.Env) -> list[dict[str, Any]]:
    """Every plain attribute (numbers, arrays, lists of them) and RNG state of each wrapper and the env."""
    state = []
    for layer in _layers(env):
        layer_state: dict[str, Any] = {}
        for k, v in vars(layer).items():
            if k in _SKIP:
                continue
            if isinstance(v, np.random.Generator):
                layer_state[k] = {"__rng__": v.bit_generator.state}
            elif _plain(v):
                layer_state[k] = copy.deepcopy(v)
        state.append(layer_state)
    return state


def load_env_state(env: gym.Env, state: list[dict[str, Any]]) -> None:
    layers = _layers(env)
    if len(layers) != len(state):
        raise RuntimeError(f"env has {len(layers)} layers, the checkpoint {len(state)}")
    for layer, layer_state in zip(layers, state, strict=True):
        for k, v in layer_state.items():
            if isinstance(v, dict) and "__rng__" in v:
                rng = getattr(layer, k, None)
                if not isinstance(rng, np.random.Generator):
                    rng = np.random.default_rng()
                    setattr(layer, k, rng)
                rng.bit_generator.state = v["__rng__"]
            else:
                old = getattr(layer, k, None)
                if isinstance(old, np.ndarray) and isinstance(v, np.ndarray):
                    v = v.astype(old.dtype, copy=True)
                elif isinstance(old, tuple) and isinstance(v, list):
                    v = tuple(v)
                elif isinstance(old, float) and isinstance(v, int) and not isinstance(v, bool):
                    v = float(v)
                setattr(layer, k, v)


def finite(x: float) -> bool:
    return math.isfinite(x)
