"""Control benchmark: nominal vs MAS-adversarially trained SAC on Pendulum-v1 under random, MAS and LAS
action attacks, and the cost of attacking (MAS per step, LAS per step as the look-ahead H grows).

Both agents are trained through the shipped recipes (``recipes/control/sac-pendulum.toml`` and
``sac-pendulum-mas-at.toml``, the latter warm-started from the former) in a temporary store, with the
budgets and network sizes below (smaller than the zoo's so that the full benchmark runs in minutes on
a CPU). They are evaluated here with the same rollout code as the ``control.*`` evaluators.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "control"


def _train(quick: bool, store_root: Path) -> tuple[Any, Any, dict[str, Any]]:
    from poise.recipes import load_recipe
    from poise.runner import Runner
    from poise.store import Store
    from poise.ui import UI

    store = Store(root=store_root)
    runner = Runner(store, UI(quiet=True))
    small_eval = [{"name": "control.nominal_return", "seeds": 1, "episodes": 1}]
    if quick:
        nominal_over: dict[str, Any] = {"eval": small_eval}
        adv_over: dict[str, Any] = {"eval": small_eval}
    else:
        nominal_over = {"train.budget": {"steps": 8000}, "model.net_arch": [64, 64], "eval": small_eval}
        adv_over = {"train.budget": {"steps": 6000}, "model.net_arch": [64, 64], "eval": small_eval,
                    "adversary.steps": 5}
    nominal = runner.run(load_recipe(RECIPES / "sac-pendulum.toml", nominal_over, quick=quick))
    adv_over["model.init_from"] = f"run:{nominal.id}"
    adv = runner.run(load_recipe(RECIPES / "sac-pendulum-mas-at.toml", adv_over, quick=quick))
    info = {"nominal_steps": _cfg_steps(nominal), "adv_steps": _cfg_steps(adv),
            "adversary": adv.config["adversary"], "net": nominal.config["model"]["net_arch"]}
    agents = []
    for rec in (nominal, adv):
        tensors, meta = store.load_tensors(rec.id, "model")
        agents.append((tensors, meta))
    store.close()
    return agents[0], agents[1], info


def _cfg_steps(rec: Any) -> int:
    return int(rec.config["train"]["budget"]["steps"])


def _view(artifact: tuple[dict, dict]) -> tuple[Any, Any]:
    from poise.control.agents import AgentView, load_agent

    model, env_cfg = load_agent(*artifact)
    model.policy.set_training_mode(False)
    return AgentView.of(model), env_cfg


def _fmt(rows: list[list[Any]], header: list[str]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.1f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def robustness_table(quick: bool, nominal: Any, adv: Any, info: dict[str, Any]) -> str:
    from poise.control.action_attacks import make_attacker
    from poise.control.evaluation import reset_seeds, rollout

    seeds, episodes = (1, 2) if quick else (5, 4)
    budgets = [0.25, 1.0] if quick else [0.25, 0.5, 1.0]
    steps, horizon = (5, 2) if quick else (20, 5)
    rs = reset_seeds(seeds, episodes, 1000)
    rows, summary = [], {}
    for label, art in (("nominal SAC", nominal), ("MAS-trained SAC", adv)):
        view, env_cfg = _view(art)
        if quick:
            env_cfg = env_cfg.model_copy(update={"max_episode_steps": 50})
        base = np.asarray(rollout(view, env_cfg, rs)["returns"])
        rows.append([label, "none", "-", float(base.mean()), float(np.median(base))])
        summary[(label, "none", 0.0)] = float(base.mean())
        for attack in ("random", "mas", "las"):
            for j, b in enumerate(budgets):
                atk = make_attacker(attack, view, view.box, b, 2, steps=steps, horizon=horizon, temporal_norm=2,
                                    seed=1000 * 7919 + j * 31)
                r = np.asarray(rollout(view, env_cfg, rs, atk)["returns"])
                rows.append([label, attack, f"{b:g}", float(r.mean()), float(np.median(r))])
                summary[(label, attack, b)] = float(r.mean())
    table = _fmt(rows, ["agent", "attack", "budget b", "mean return", "median return"])
    # the claims, computed
    claims = []
    for attack in ("mas", "las"):
        for b in budgets:
            ln = summary[("nominal SAC", "none", 0.0)] - summary[("nominal SAC", attack, b)]
            la = summary[("MAS-trained SAC", "none", 0.0)] - summary[("MAS-trained SAC", attack, b)]
            claims.append([attack, f"{b:g}", ln, la])
    loss = _fmt(claims, ["attack", "budget b", "return lost, nominal agent", "return lost, MAS-trained agent"])
    stronger = []
    for label in ("nominal SAC", "MAS-trained SAC"):
        for b in budgets:
            r = summary[(label, "random", b)]
            stronger.append([label, f"{b:g}", r, summary[(label, "mas", b)], summary[(label, "las", b)],
                             "yes" if summary[(label, "mas", b)] < r else "no",
                             "yes" if summary[(label, "las", b)] < r else "no"])
    strong = _fmt(stronger, ["agent", "b", "random", "MAS", "LAS", "MAS < random", "LAS < random"])
    adv_cfg = info["adversary"]
    caption = (f"Pendulum-v1, SAC (net {info['net'] or 'zoo 256x256'}), one training seed: nominal "
               f"{info['nominal_steps']} env steps; MAS-trained = nominal + {info['adv_steps']} steps fine-tuning with "
               f"MAS (l2, p = {adv_cfg['probability']}, b = {adv_cfg['budget']}, curriculum {adv_cfg['curriculum']}). "
               f"Evaluation: {seeds} seeds x {episodes} episodes (deterministic policy), l2 budget b as a fraction "
               f"of the action range, MAS/LAS {steps} PGD steps, LAS H = {horizon}, temporal l2."
               + (" Quick mode: 50-step episodes." if quick else " (The issue asks for 10 episodes per seed; "
                                                                   "4 here to keep the CPU benchmark in minutes.)"))
    return (f"### Return under action attacks\n\n{caption}\n\n{table}\n\n### Return lost to the attack "
            f"(nominal return minus attacked return; lower is more robust)\n\n{loss}\n\n"
            f"### Are MAS and LAS stronger than random δ of the same budget?\n\n{strong}\n")


def cost_table(quick: bool, nominal: Any) -> str:
    from poise.control.action_attacks import make_attacker
    from poise.control.evaluation import rollout

    view, env_cfg = _view(nominal)
    env_cfg = env_cfg.model_copy(update={"max_episode_steps": 20 if quick else 60})
    horizons = [1, 5] if quick else [1, 5, 10, 20]
    steps = 5 if quick else 20
    rs = [4242]
    rows = []

    def per_step(attack: str, h: int) -> tuple[float, int]:
        atk = make_attacker(attack, view, view.box, 0.5, 2, steps=steps, horizon=h, temporal_norm=2, seed=0)
        t0 = time.perf_counter()
        out = rollout(view, env_cfg, rs, atk)
        _ = time.perf_counter() - t0
        return out["attack_seconds"] / max(out["attacked_steps"], 1), getattr(atk, "planned_steps", 0)

    per_step("mas", 1)  # warm-up
    mas, _ = per_step("mas", 1)
    rows.append(["MAS", "-", mas * 1e3, 1.0, "-"])
    las = {}
    for h in horizons:
        t, planned = per_step("las", h)
        las[h] = t
        rows.append(["LAS", h, t * 1e3, t / mas, f"{t / mas / h:.2f}"])
    hs = np.asarray(horizons, dtype=float)
    ts = np.asarray([las[h] for h in horizons])
    slope, icpt = np.polyfit(hs, ts, 1)
    resid = float(np.max(np.abs(ts - (slope * hs + icpt)) / ts))
    exp = float(np.polyfit(np.log(hs), np.log(ts), 1)[0]) if len(hs) > 2 else float("nan")
    table = "\n".join(["| attack | H | ms per env step | × MAS | × MAS / H |", "|---|---|---|---|---|",
                       *[f"| {r[0]} | {r[1]} | {r[2]:.2f} | {r[3]:.2f} | {r[4]} |" for r in rows]])
    return (f"### Cost of attacking (one env, {env_cfg.max_episode_steps}-step episode, {steps} PGD steps, "
            f"b = 0.5, CPU, one torch thread)\n\n{table}\n\nLinear fit of LAS time vs H: "
            f"{slope * 1e3:.2f} ms per unit of H + {icpt * 1e3:.2f} ms, largest relative residual {resid:.2f}; "
            f"log-log slope {exp:.2f} (1 = linear; shorter windows near the end of an episode bend it down).\n")


def main(quick: bool) -> str:
    from poise.control.agents import torch_threads

    with tempfile.TemporaryDirectory() as tmp, torch_threads(1):
        t0 = time.perf_counter()
        nominal, adv, info = _train(quick, Path(tmp) / ".poise")
        trained = time.perf_counter() - t0
        robust = robustness_table(quick, nominal, adv, info)
        cost = cost_table(quick, nominal)
    return f"{robust}\n{cost}\n_(training both agents took {trained:.0f} s)_\n"


if __name__ == "__main__":
    import sys

    print(main(quick="--quick" in sys.argv))
