"""Running stable-baselines3's own training loop under poise's budget, schedule and checkpoints.

* **Budget** — counted in environment steps (``model.num_timesteps``). A steps budget is passed to
  ``learn`` (PPO finishes its last rollout, so it may overshoot by up to ``n_steps × n_envs``); a
  time or energy budget is measured by the meter and stops the run from a callback.
* **Schedule** — SB3 takes the learning rate as a callable; poise passes one that ignores SB3's
  "progress remaining" and returns ``lr_at(schedule, num_timesteps, meter.total_steps, lr)``, so UBA
  or any poise schedule follows the budget (re-estimated totals included).
* **Checkpoints** — taken every ``train.checkpoint_every`` steps at a rollout boundary: on entry to
  ``collect_rollouts``, after the previous gradient update and before any randomness of the next
  rollout (gSDE noise included). A checkpoint holds (:class:`SB3State`) the networks and optimisers,
  SAC's entropy coefficient, the counters (timesteps, updates, episodes), the replay buffer (filled
  part), the exploration noise, the action space's RNG (warm-up actions), the last observation, the
  state of every env (classic control: every attribute and RNG of each wrapper), extra objects such as
  the adversary, and — through ``ctx.checkpoint`` — the torch, numpy and Python RNGs and the meter.

**What resumes exactly**: for classic-control envs on CPU a killed run resumes to the same weights and
metrics as an uninterrupted one. For envs whose state is not plain data (Box2D, MuJoCo) the envs are
reset at the resume point with seeds derived from the run seed and the step: the episodes in flight
are cut (their transitions stay in the replay buffer), everything else resumes as above. SB3's
logger and episode-statistics window (logging only) start afresh.

**Phases** — the run's time and energy are split (``ctx.phase``) into ``rollout`` (SB3's
``collect_rollouts`` between the callbacks' ``on_rollout_start`` and ``on_rollout_end``: acting in the
envs, the adversary included) and ``learn`` (from the end of a rollout to the start of the next: the
gradient updates); checkpoints and evaluation fall in ``other``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback

from poise.context import RunContext
from poise.control.envs import env_state, load_env_state, supports_exact_state
from poise.schedules import lr_at


class SB3State:
    """Checkpointable state of an SB3 model, its envs and extra objects (``state_dict``/``load_state_dict``)."""

    def __init__(self, model: Any, extras: dict[str, Any] | None = None):
        self.model = model
        self.extras = extras or {}
        self.resumed_exactly: bool | None = None

    @property
    def envs(self) -> list[Any]:
        return list(getattr(self.model.get_env(), "envs", []))

    def state_dict(self) -> dict[str, Any]:
        m = self.model
        _, torch_vars = m._get_torch_save_params()
        state: dict[str, Any] = {
            "params": m.get_parameters(),
            "torch_vars": {name: _get(m, name).detach().clone() for name in torch_vars},
            "num_timesteps": int(m.num_timesteps),
            "n_updates": int(m._n_updates),
            "episode_num": int(m._episode_num),
            "last_obs": None if m._last_obs is None else np.array(m._last_obs, copy=True),
            "last_episode_starts": None if m._last_episode_starts is None else np.array(m._last_episode_starts),
            "last_original_obs": (None if getattr(m, "_last_original_obs", None) is None
                                  else np.array(m._last_original_obs, copy=True)),
            "action_space_rng": m.action_space.np_random.bit_generator.state,
            "noise": _noise_state(getattr(m, "action_noise", None)),
            "replay": _replay_state(getattr(m, "replay_buffer", None)),
            "envs": ([env_state(e) for e in self.envs]
                     if self.envs and all(supports_exact_state(e) for e in self.envs) else None),
            "extras": {k: v.state_dict() for k, v in self.extras.items()},
        }
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        m = self.model
        m.set_parameters(state["params"], exact_match=True, device=m.device)
        for name, value in state["torch_vars"].items():
            with torch.no_grad():
                _get(m, name).copy_(value.to(m.device))
        m.num_timesteps = int(state["num_timesteps"])
        m._n_updates = int(state["n_updates"])
        m._episode_num = int(state["episode_num"])
        m.action_space.np_random.bit_generator.state = state["action_space_rng"]
        _load_noise(getattr(m, "action_noise", None), state["noise"])
        _load_replay(getattr(m, "replay_buffer", None), state["replay"])
        for k, v in self.extras.items():
            v.load_state_dict(state["extras"][k])
        if state["envs"] is not None and state["last_obs"] is not None:
            for e, s in zip(self.envs, state["envs"], strict=True):
                load_env_state(e, s)
            m._last_obs = state["last_obs"]
            m._last_episode_starts = state["last_episode_starts"]
            m._last_original_obs = state["last_original_obs"]
            self.resumed_exactly = True
        else:  # envs that are not plain data: start fresh episodes, seeded from the run seed and the step
            vec = m.get_env()
            vec.seed(int((m.seed or 0) * 1_000_003 + m.num_timesteps) % (2**31 - 1))
            m._last_obs = vec.reset()
            m._last_episode_starts = np.ones((vec.num_envs,), dtype=bool)
            self.resumed_exactly = False


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _noise_state(noise: Any) -> dict[str, Any] | None:
    if noise is None:
        return None
    if hasattr(noise, "noises"):  # VectorizedActionNoise
        return {"noises": [_noise_state(n) for n in noise.noises]}
    return {k: np.array(v, copy=True) for k, v in vars(noise).items() if isinstance(v, np.ndarray)}


def _load_noise(noise: Any, state: dict[str, Any] | None) -> None:
    if noise is None or state is None:
        return
    if "noises" in state:
        for n, s in zip(noise.noises, state["noises"], strict=True):
            _load_noise(n, s)
        return
    for k, v in state.items():
        setattr(noise, k, np.array(v, copy=True))


_REPLAY_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones", "timeouts")


def _replay_state(buf: Any) -> dict[str, Any] | None:
    if buf is None:
        return None
    n = buf.buffer_size if buf.full else buf.pos
    out: dict[str, Any] = {"pos": int(buf.pos), "full": bool(buf.full)}
    for name in _REPLAY_ARRAYS:
        arr = getattr(buf, name, None)
        if arr is not None:
            out[name] = np.array(arr[:n], copy=True)
    return out


def _load_replay(buf: Any, state: dict[str, Any] | None) -> None:
    if buf is None or state is None:
        return
    for name in _REPLAY_ARRAYS:
        if name in state and getattr(buf, name, None) is not None:
            arr = state[name]
            getattr(buf, name)[: len(arr)] = arr
    buf.pos = int(state["pos"])
    buf.full = bool(state["full"])


def lr_callable(schedule: Any, lr_max: float, meter: Any, clock: dict[str, Any]) -> Any:
    """SB3 learning-rate callable following a poise schedule over the budget (``clock['model']`` is set
    once the model exists)."""

    def lr(_progress_remaining: float) -> float:
        model = clock.get("model")
        t = int(model.num_timesteps) if model is not None else 0
        return lr_at(schedule, t, meter.total_steps, lr_max)

    return lr


class _PoiseCallback(BaseCallback):
    """Feeds the meter and progress bar, logs episode returns, stops a resource budget when spent, and
    charges time to the phases ``rollout`` and ``learn``."""

    def __init__(self, ctx: RunContext, meter: Any, bar: Any, lr: Any):
        super().__init__(verbose=0)
        self.ctx, self.meter, self.bar, self.lr = ctx, meter, bar, lr
        self.open: Any = None

    def enter(self, name: str | None) -> None:
        """Leave the open phase, if any, and enter ``name`` (``None``: none)."""
        if self.open is not None:
            self.open.__exit__(None, None, None)
        self.open = self.ctx.phase(name) if name else None
        if self.open is not None:
            self.open.__enter__()

    def _on_rollout_start(self) -> None:
        self.enter("rollout")

    def _on_rollout_end(self) -> None:
        self.enter("learn")

    def _on_training_end(self) -> None:
        self.enter(None)

    def _on_step(self) -> bool:
        t = int(self.model.num_timesteps)
        self.meter.after_step(t)
        self.ctx.step = t
        self.bar.update(t, self.meter.total_steps)
        for info in self.locals.get("infos", []):
            ep = info.get("episode")
            if ep is not None:
                self.ctx.log_metrics({"episode_return": float(ep["r"]), "lr": float(self.lr(0.0))}, step=t,
                                     direction="max")
        return not (self.meter.is_resource and self.meter.done(t))


def learn(ctx: RunContext, model: Any, meter: Any, state: SB3State, *, lr: Any, callbacks: list[Any] = (),
          label: str | None = None) -> int:
    """Train ``model`` until the budget is spent, resuming from the run's last checkpoint; returns the
    number of environment steps taken."""
    from stable_baselines3.common.callbacks import CallbackList

    start = ctx.restore()
    if start and state.resumed_exactly is False:
        ctx.info("resumed with fresh episodes: this env's state cannot be checkpointed exactly")
    every = ctx.cfg.train.checkpoint_every
    marks = {"next": (start // every + 1) * every}
    original = model.collect_rollouts
    poise_cb = _PoiseCallback(ctx, meter, None, lr)

    def collect_rollouts(*args: Any, **kwargs: Any) -> Any:
        poise_cb.enter(None)  # the update is over: a checkpoint is not learning
        t = int(model.num_timesteps)
        if t >= marks["next"]:
            ctx.checkpoint(t)
            marks["next"] = (t // every + 1) * every
        return original(*args, **kwargs)

    model.collect_rollouts = collect_rollouts
    noise_state = _noise_state(getattr(model, "action_noise", None)) if start else None
    if noise_state is not None:  # learn() resets the exploration noise; a resumed run continues it
        setup = model._setup_learn

        def setup_learn(*args: Any, **kwargs: Any) -> Any:
            out = setup(*args, **kwargs)
            _load_noise(model.action_noise, noise_state)
            return out

        model._setup_learn = setup_learn
    total = meter.total_steps
    label = label or f"{ctx.cfg.display_name} [{ctx.run_id[:6]}]"
    try:
        with ctx.progress(label, total) as bar:
            bar.update(start, total)
            remaining = (total - start) if total is not None else 10**12
            if remaining > 0:
                poise_cb.bar = bar
                cb = CallbackList([poise_cb, *callbacks])
                model.learn(total_timesteps=remaining, callback=cb, reset_num_timesteps=start == 0,
                            log_interval=None)
    finally:
        poise_cb.enter(None)  # a budget stop ends SB3's loop inside a rollout
        del model.collect_rollouts
        if noise_state is not None:
            del model._setup_learn
    steps = int(model.num_timesteps)
    ctx.step = steps
    if steps != start:
        ctx.checkpoint(steps)
    ctx.log_metric("budget_used", meter.used_fraction(steps), axis="train", direction="min")
    return steps
