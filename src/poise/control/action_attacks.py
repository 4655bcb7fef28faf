"""Attacks on an agent's actions: random δ, MAS and LAS, batched cores and one gymnasium wrapper.

The attacker adds δ to the agent's action before the actuator, under a budget ``b`` given as a
fraction of each dimension's action range — a radius ``ε = 2b`` in the normalised box ``[-1, 1]^d``
(see :mod:`poise.control.envs`). The executed action is always clipped to the box.

* **random** — δ uniform on the l_p sphere of radius ε (the control: same budget, no intent).
* **MAS** (myopic, Lee et al. AAAI 2020) — projected gradient descent on δ minimising the agent's
  objective at the perturbed action (critic Q for SAC/TD3/DDPG, policy log-density for PPO; see
  :class:`~poise.control.agents.AgentView`) over ``‖δ‖_p ≤ ε`` and ``u + δ ∈ [-1, 1]^d``. ``steps``
  iterations from a random start in the ball; each moves ``step_size·ε`` along the normalised
  gradient (sign for l∞, l2-normalised for l1 and l2), then clips to the box and projects onto the
  ball (l1: simplex projection). The best iterate is kept.
* **LAS** (look-ahead) — the budget couples time: over a window of ``H`` steps,
  ``‖(‖δ_t‖_p, …, ‖δ_{t+H-1}‖_p)‖_q ≤ B`` with ``B = ε·H^{1/q}`` (so spreading evenly gives ε per step,
  the same as MAS). At each step the attacker copies the env, rolls the agent's own actions forward
  over the window's remaining ``k`` steps, and at each planned state computes the MAS perturbation at
  the whole remaining budget ``R`` and the damage it does, ``σ_j = f(u_j) − f(u_j + δ_j) ≥ 0``. The
  remaining budget is then shared over the window as the optimum of the linearised problem
  ``max Σ σ_j m_j/R s.t. ‖m‖_q ≤ R``: ``m ∝ σ^{1/(q−1)}`` (q = 2: proportional to damage; q = 1: all on
  the most damaging step; q = ∞: every step gets R). The first planned δ, projected onto its share
  ``m_0``, is executed; its norm is charged to the window and the attacker re-plans at the next step
  (receding horizon). With H = 1 LAS is exactly MAS. *Choice*: Lee et al.'s code projects the norms of
  unconstrained gradient steps (proportional to the gradient size) onto the temporal ball; the damage
  at full radius measures the same sensitivity but does not depend on the objective's scale.

:class:`ActionAttack` wraps any env with one of these (``ActionAttack(env, agent, budget, norm, …)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from poise.control.agents import AgentView
from poise.control.envs import ActionBox, CopyMode, EpisodeLog, copy_env, resolve_copy_mode
from poise.control.projections import lp_norm, parse_norm, project_ball, sample_ball, sample_sphere
from poise.errors import UserError

AttackName = Literal["random", "mas", "las"]
ATTACKS: tuple[str, ...] = ("random", "mas", "las")


def pgd(view: AgentView, obs: torch.Tensor, u: torch.Tensor, radius: torch.Tensor, p: float, *, steps: int,
        step_size: float, random_start: bool, generator: torch.Generator) -> torch.Tensor:
    """δ (one row per state) minimising ``view.objective(obs, u + δ)`` over ``‖δ‖_p ≤ radius`` with
    ``u + δ`` in the box; rows with radius 0 get δ = 0."""
    n, d = u.shape
    radius = radius.to(u.dtype)

    def feasible(delta: torch.Tensor) -> torch.Tensor:
        return project_ball(torch.clamp(u + delta, -1.0, 1.0) - u, radius, p)

    def value(delta: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return view.objective(obs, u + delta)

    delta = sample_ball(n, d, radius.cpu(), p, generator).to(u) if random_start else torch.zeros_like(u)
    delta = feasible(delta)
    best, best_val = delta.clone(), value(delta)
    alpha = (step_size * radius).unsqueeze(-1)
    for _ in range(steps):
        x = delta.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(view.objective(obs, u + x).sum(), x)
        direction = torch.sign(g) if math.isinf(p) else g / lp_norm(g, 2.0).clamp_min(1e-12).unsqueeze(-1)
        delta = feasible(delta - alpha * direction)
        val = value(delta)
        better = val < best_val
        best = torch.where(better.unsqueeze(-1), delta, best)
        best_val = torch.where(better, val, best_val)
    return best.detach()


def temporal_shares(damage: np.ndarray, remaining: float, q: float) -> np.ndarray:
    """Shares m ≥ 0 with ``‖m‖_q = remaining`` maximising ``Σ damage·m`` (Hölder): m ∝ damage^{1/(q−1)}."""
    k = len(damage)
    if k == 0 or remaining <= 0:
        return np.zeros(k)
    if math.isinf(q):
        return np.full(k, remaining)
    dmg = np.clip(np.asarray(damage, dtype=np.float64), 0.0, None)
    if not np.any(dmg > 0):  # no step is sensitive: spread evenly
        return np.full(k, remaining / k ** (1.0 / q))
    if q == 1.0:
        out = np.zeros(k)
        out[int(np.argmax(dmg))] = remaining
        return out
    w = (dmg / dmg.max()) ** (1.0 / (q - 1.0))
    return remaining * w / np.linalg.norm(w, ord=q)


class Attacker:
    """Base of the batched attack cores: ``perturb(obs, u, slots)`` returns executed actions in [-1, 1]^d.

    ``slots`` names the environment each row belongs to (look-ahead keeps per-env budgets and needs
    each env's copy); ``begin_episode(slot)`` starts a new episode there.
    """

    name = "none"

    def __init__(self, box: ActionBox, budget: float, norm: Any = 2, *, seed: int = 0):
        if not budget > 0:
            raise UserError(f"expected a budget > 0 (got {budget!r})", field="budget")
        try:
            self.p = parse_norm(norm)
        except ValueError as e:
            raise UserError(str(e), field="norm") from None
        self.box = box
        self.budget = float(budget)
        self.generator = torch.Generator().manual_seed(int(seed))

    @property
    def eps(self) -> float:
        return ActionBox.radius(self.budget)

    def begin_episode(self, slot: int) -> None:  # noqa: B027 - optional hook
        pass

    def perturb(self, obs: np.ndarray, u: np.ndarray, slots: Sequence[int]) -> np.ndarray:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])


class RandomAttacker(Attacker):
    """δ uniform on the l_p sphere of radius ε (a control with the same budget and no intent)."""

    name = "random"

    def perturb(self, obs: np.ndarray, u: np.ndarray, slots: Sequence[int]) -> np.ndarray:
        n, d = np.asarray(u).shape
        delta = sample_sphere(n, d, self.eps, self.p, self.generator, dtype=torch.float64).numpy()
        return np.clip(u + delta, -1.0, 1.0)


class MASAttacker(Attacker):
    """Myopic action-space attack: PGD on δ against the agent's objective at every step."""

    name = "mas"

    def __init__(self, view: AgentView | None, box: ActionBox, budget: float, norm: Any = 2, *, steps: int = 20,
                 step_size: float | None = None, random_start: bool = True, seed: int = 0):
        super().__init__(box, budget, norm, seed=seed)
        if steps < 1:
            raise UserError(f"expected at least 1 PGD step (got {steps})", field="steps")
        self.view = view
        self.steps = int(steps)
        self.step_size = float(step_size) if step_size is not None else 2.5 / self.steps
        self.random_start = random_start

    def _pgd(self, obs: np.ndarray, u: np.ndarray, radius: np.ndarray) -> tuple[torch.Tensor, torch.Tensor,
                                                                                   torch.Tensor]:
        o = self.view.obs_tensor(obs)
        ut = torch.as_tensor(np.asarray(u), dtype=torch.float32, device=self.view.device)
        r = torch.as_tensor(radius, dtype=torch.float32, device=self.view.device)
        delta = pgd(self.view, o, ut, r, self.p, steps=self.steps, step_size=self.step_size,
                    random_start=self.random_start, generator=self.generator)
        return o, ut, delta

    def perturb(self, obs: np.ndarray, u: np.ndarray, slots: Sequence[int]) -> np.ndarray:
        _, ut, delta = self._pgd(obs, u, np.full(len(u), self.eps))
        return torch.clamp(ut + delta, -1.0, 1.0).cpu().numpy().astype(np.float64)


class LASAttacker(MASAttacker):
    """Look-ahead action-space attack with a spatio-temporal budget and a receding horizon.

    ``copies(slot)`` returns an independent copy of that slot's env in its current state (deep copy
    or replay, :func:`poise.control.envs.copy_env`).
    """

    name = "las"

    def __init__(self, view: AgentView | None, box: ActionBox, budget: float, norm: Any = 2, *, horizon: int = 5,
                 temporal_norm: Any = 2, copies: Callable[[int], gym.Env] | None = None, steps: int = 20,
                 step_size: float | None = None, random_start: bool = True, seed: int = 0):
        super().__init__(view, box, budget, norm, steps=steps, step_size=step_size, random_start=random_start,
                         seed=seed)
        if int(horizon) < 1:
            raise UserError(f"expected a look-ahead horizon H >= 1 (got {horizon})", field="horizon")
        try:
            self.q = parse_norm(temporal_norm)
        except ValueError as e:
            raise UserError(str(e), field="temporal_norm") from None
        self.horizon = int(horizon)
        self.copies = copies
        self.window_budget = self.eps * (1.0 if math.isinf(self.q) else self.horizon ** (1.0 / self.q))
        self._remaining: dict[int, float] = {}
        self._left: dict[int, int] = {}
        self.planned_steps = 0  # look-ahead steps taken so far (cost accounting)

    def begin_episode(self, slot: int) -> None:
        self._remaining[slot] = self.window_budget
        self._left[slot] = self.horizon

    def _charge(self, slot: int, used: float) -> None:
        r = self._remaining[slot]
        if math.isinf(self.q):
            rest = r
        elif self.q == 1.0:
            rest = r - used
        else:
            rest = (max(r**self.q - used**self.q, 0.0)) ** (1.0 / self.q)
        self._left[slot] -= 1
        if self._left[slot] <= 0:
            self.begin_episode(slot)  # next window
        else:
            self._remaining[slot] = max(rest, 0.0)

    def perturb(self, obs: np.ndarray, u: np.ndarray, slots: Sequence[int]) -> np.ndarray:
        if self.copies is None:
            raise RuntimeError("LAS needs copies of the environments")
        slots = list(slots)
        for s in slots:
            if s not in self._remaining:
                self.begin_episode(s)
        n = len(slots)
        k = np.array([self._left[s] for s in slots])
        remaining = np.array([self._remaining[s] for s in slots])
        envs: list[gym.Env | None] = [self.copies(s) if k[i] > 1 else None for i, s in enumerate(slots)]
        damage = [np.zeros(int(k[i])) for i in range(n)]
        cur_obs, cur_u = np.asarray(obs), np.asarray(u, dtype=np.float64)
        alive = np.ones(n, dtype=bool)
        first_delta = None
        for j in range(int(k.max())):
            rows = np.flatnonzero(alive & (j < k))
            if len(rows) == 0:
                break
            o, ut, delta = self._pgd(cur_obs[rows], cur_u[rows], remaining[rows])
            with torch.no_grad():
                dmg = (self.view.objective(o, ut) - self.view.objective(o, ut + delta)).cpu().numpy()
            for r_i, row in enumerate(rows):
                damage[row][j] = max(float(dmg[r_i]), 0.0)
            if j == 0:
                first_delta = delta.cpu().numpy().astype(np.float64)
            # roll the copies forward with the agent's own actions
            next_obs = cur_obs.copy()
            for row in rows:
                env = envs[row]
                if env is None or j + 1 >= k[row]:
                    continue
                ob, _, term, trunc, _ = env.step(self.box.to_env(cur_u[row]))
                self.planned_steps += 1
                next_obs[row] = ob
                if term or trunc:
                    alive[row] = False
            cur_obs = next_obs
            cur_u = cur_u.copy()
            live = np.flatnonzero(alive & (j + 1 < k))
            if len(live):
                cur_u[live] = self.view.act(cur_obs[live])
        for env in envs:
            if env is not None:
                env.close()
        assert first_delta is not None
        out = np.empty_like(np.asarray(u, dtype=np.float64))
        for i, s in enumerate(slots):
            share = temporal_shares(damage[i], remaining[i], self.q)[0]
            d0 = project_ball(torch.as_tensor(first_delta[i : i + 1]), float(share), self.p).numpy()[0]
            out[i] = np.clip(u[i] + d0, -1.0, 1.0)
            used = float(np.linalg.norm(out[i] - u[i], ord=self.p))
            self._charge(s, min(used, remaining[i]))
        return out

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "remaining": {str(k): v for k, v in self._remaining.items()},
                "left": {str(k): v for k, v in self._left.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._remaining = {int(k): float(v) for k, v in state["remaining"].items()}
        self._left = {int(k): int(v) for k, v in state["left"].items()}


class MixAttacker(MASAttacker):
    """Tessler et al.'s noisy-robust (NR-MDP) mixing: the executed action is ``(1 − α)·u + α·ū``.

    ``budget`` is the mixing weight α ∈ (0, 1]. *Choice*: Tessler et al. learn the adversary ū = π̄(s)
    by gradient descent on the agent's critic; here ū is that critic's best response, found by PGD over
    the whole action box (sign steps of ``step_size·2``) on ``f(s, (1 − α)u + αū)``. With
    ``probability`` = α and budget 1 the training wrapper gives the probabilistic variant (PR-MDP).
    """

    name = "mix"

    def __init__(self, view: AgentView | None, box: ActionBox, budget: float, norm: Any = "inf", **kw: Any):
        if not 0 < budget <= 1:
            raise UserError(f"expected a mixing weight alpha in (0, 1] (got {budget!r})", field="budget")
        super().__init__(view, box, budget, norm, **kw)

    def perturb(self, obs: np.ndarray, u: np.ndarray, slots: Sequence[int]) -> np.ndarray:
        o = self.view.obs_tensor(obs)
        ut = torch.as_tensor(np.asarray(u), dtype=torch.float32, device=self.view.device)
        alpha = min(self.budget, 1.0)
        n, d = ut.shape
        adv = (torch.rand(n, d, generator=self.generator) * 2 - 1).to(ut) if self.random_start else ut.clone()

        def mixed(a: torch.Tensor) -> torch.Tensor:
            return (1.0 - alpha) * ut + alpha * a

        with torch.no_grad():
            best, best_val = adv.clone(), self.view.objective(o, mixed(adv))
        for _ in range(self.steps):
            x = adv.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(self.view.objective(o, mixed(x)).sum(), x)
            adv = torch.clamp(adv - 2.0 * self.step_size * torch.sign(g), -1.0, 1.0)
            with torch.no_grad():
                val = self.view.objective(o, mixed(adv))
            better = val < best_val
            best = torch.where(better.unsqueeze(-1), adv, best)
            best_val = torch.where(better, val, best_val)
        return torch.clamp(mixed(best), -1.0, 1.0).cpu().numpy().astype(np.float64)


def make_attacker(name: str, view: AgentView | None, box: ActionBox, budget: float, norm: Any = 2, *,
                  steps: int = 20, step_size: float | None = None, random_start: bool = True, horizon: int = 5,
                  temporal_norm: Any = 2, copies: Callable[[int], gym.Env] | None = None, seed: int = 0
                  ) -> Attacker:
    """One of :data:`ATTACKS` (or ``mix``) by name; ``view`` may be set later (``attacker.view = …``)."""
    if name == "random":
        return RandomAttacker(box, budget, norm, seed=seed)
    if name == "mas":
        return MASAttacker(view, box, budget, norm, steps=steps, step_size=step_size, random_start=random_start,
                           seed=seed)
    if name == "mix":
        return MixAttacker(view, box, budget, steps=steps, step_size=step_size, random_start=random_start, seed=seed)
    if name == "las":
        return LASAttacker(view, box, budget, norm, horizon=horizon, temporal_norm=temporal_norm, copies=copies,
                           steps=steps, step_size=step_size, random_start=random_start, seed=seed)
    raise UserError(f"unknown attack {name!r}; expected one of: {', '.join(ATTACKS)}", field="attack")


class ActionAttack(gym.Wrapper):
    """Perturbs every action passed to ``env`` (random δ, MAS or LAS) before it reaches the actuator.

    ``ActionAttack(env, agent, budget, norm, attack="mas", …)``: ``agent`` is an SB3 model or an
    :class:`AgentView`; ``budget`` is a fraction of the action range; ``norm`` is 1, 2 or inf. With
    ``probability`` < 1 only that share of steps is attacked. ``info["action_attack"]`` reports the
    agent's action, the executed one and the perturbation's norm (in normalised units). LAS copies
    ``env`` by deep copy when that is faithful, else by seed + action replay (``copy_mode``), saying so
    once; for replay the wrapper passes an explicit seed to every reset.
    """

    def __init__(self, env: gym.Env, agent: Any, budget: float, norm: Any = 2, *, attack: str = "mas",
                 probability: float = 1.0, steps: int = 20, step_size: float | None = None,
                 random_start: bool = True, horizon: int = 5, temporal_norm: Any = 2, copy_mode: CopyMode = "auto",
                 make_env: Callable[[], gym.Env] | None = None, seed: int = 0,
                 notify: Callable[[str], None] | None = None):
        super().__init__(env)
        if not isinstance(env.action_space, gym.spaces.Box):
            raise UserError(f"action attacks need continuous (Box) actions; this env has {env.action_space}",
                            field="env")
        if not 0.0 <= probability <= 1.0:
            raise UserError(f"expected a probability in [0, 1] (got {probability})", field="probability")
        self.box = ActionBox.of(env)
        self.view = agent if agent is None or hasattr(agent, "objective") else AgentView.of(agent)
        self.probability = float(probability)
        self.rng = np.random.default_rng(seed)
        self.log = EpisodeLog()
        self._make = make_env or (lambda: gym.make(env.spec.id) if env.spec else None)
        self._copy_mode = (resolve_copy_mode(env, self._make, copy_mode, notify) if attack == "las" else "deepcopy")
        self.attacker = make_attacker(attack, self.view, self.box, budget, norm, steps=steps, step_size=step_size,
                                      random_start=random_start, horizon=horizon, temporal_norm=temporal_norm,
                                      copies=self._copy, seed=seed)
        self._obs: np.ndarray | None = None

    @property
    def budget(self) -> float:
        return self.attacker.budget

    @budget.setter
    def budget(self, value: float) -> None:
        self.attacker.budget = float(value)
        if isinstance(self.attacker, LASAttacker):
            q = self.attacker.q
            h = self.attacker.horizon
            self.attacker.window_budget = self.attacker.eps * (1.0 if math.isinf(q) else h ** (1 / q))

    def _copy(self, slot: int) -> gym.Env:
        return copy_env(self.env, self._copy_mode, self._make, self.log)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        if seed is None and self._copy_mode == "replay":
            seed = int(self.rng.integers(2**31 - 1))
        obs, info = self.env.reset(seed=seed, options=options)
        if seed is not None:
            self.log.reset(seed)
        self.attacker.begin_episode(0)
        self._obs = np.asarray(obs)
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        u = self.box.to_unit(np.asarray(action, dtype=np.float64).reshape(1, -1))
        executed = u
        attacked = self.budget > 0 and (self.probability >= 1.0 or self.rng.random() < self.probability)
        if attacked and self._obs is not None:
            executed = self.attacker.perturb(self._obs.reshape(1, -1), u, [0])
        a = self.box.to_env(executed[0], dtype=self.env.action_space.dtype)
        obs, reward, terminated, truncated, info = self.env.step(a)
        self.log.step(a)
        self._obs = np.asarray(obs)
        info = dict(info)
        info["action_attack"] = {"agent": u[0], "executed": executed[0], "attacked": bool(attacked),
                                 "norm": float(np.linalg.norm(executed[0] - u[0], ord=self.attacker.p))}
        return obs, reward, terminated, truncated, info
