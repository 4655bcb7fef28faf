"""Lipschitz feedback policies: the α trade-off on the double integrator and on Pendulum-v1.

Runs the shipped sweep recipes (``recipes/control/lipschitz-sweep-*.toml``) through the real runner in
a temporary store and tabulates, per policy: training error, nominal regret vs the expert,
degradation under the strongest measurement attack at two ε, the certified upper bound on lip(π), the
empirical lower bound, and the largest measured per-step action deviation over certified lip · ε
(which must stay ≤ 1 on every row).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from poise.recipes import load_recipe, shipped_recipes_root
from poise.runner import Runner
from poise.store import Store
from poise.ui import UI

SWEEPS = [
    ("double integrator (LQR expert)", "control/lipschitz-sweep-linear.toml"),
    ("Pendulum-v1 (energy shaping + LQR expert)", "control/lipschitz-sweep-pendulum.toml"),
]


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.4g}"


def _table(store: Store, run_id: str) -> tuple[str, list[bool]]:
    art = store.artifact(run_id, "tradeoff")
    rows = json.loads(art.path.read_text())["rows"]
    eps_keys = sorted(
        {k for r in rows for k in r["metrics"] if k.startswith("robustness.degradation_eps")},
        key=lambda k: float(k.removeprefix("robustness.degradation_eps")),
    )
    eps = [k.removeprefix("robustness.degradation_eps") for k in eps_keys]
    head = [
        "policy",
        "train error",
        "nominal regret",
        *[f"degradation ε={e}" for e in eps],
        "certified lip ≤",
        "empirical lip ≥",
        "max deviation / (lip·ε)",
        "≤ 1",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    ok = []
    for r in rows:
        m = r["metrics"]
        ratio = m.get("robustness.bound_ratio")
        ok.append(ratio is not None and ratio <= 1 + 1e-6)
        cells = [
            r["label"],
            _fmt(m.get("train.train_error")),
            _fmt(m.get("utility.regret")),
            *[_fmt(m.get(k)) for k in eps_keys],
            _fmt(m.get("robustness.lip_upper")),
            _fmt(m.get("robustness.lip_lower")),
            _fmt(ratio),
            "yes" if ok[-1] else "**NO**",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines), ok


def _trend(store: Store, run_id: str) -> str:
    rows = json.loads(store.artifact(run_id, "tradeoff").path.read_text())["rows"]
    rows = [r for r in rows if r["alpha"] is not None]
    reg = [r["metrics"].get("utility.regret") for r in rows]
    deg = [r["metrics"].get("robustness.worst_degradation") for r in rows]
    fall = sum(b <= a for a, b in zip(reg, reg[1:], strict=False))
    rise = sum(b >= a for a, b in zip(deg, deg[1:], strict=False))
    n = len(rows) - 1
    return (
        f"As α grows: regret falls in {fall}/{n} consecutive steps "
        f"({_fmt(reg[0])} → {_fmt(reg[-1])}); worst-case degradation rises in {rise}/{n} "
        f"({_fmt(deg[0])} → {_fmt(deg[-1])})."
    )


def main(quick: bool) -> str:
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(root=Path(tmp) / ".poise")
        runner = Runner(store, UI(quiet=True))
        for title, rel in SWEEPS:
            t0 = time.perf_counter()
            rec = runner.run(load_recipe(shipped_recipes_root() / rel, quick=quick))
            table, ok = _table(store, rec.id)
            cfg = load_recipe(shipped_recipes_root() / rel, quick=quick)
            bc = load_recipe(shipped_recipes_root() / "control" / cfg.sweep.policy, quick=quick)
            atk = next(e for e in bc.eval if e.name == "control.lipschitz_attacks").model_extra
            out.append(
                f"### {title}\n\n{table}\n\n"
                f"_{bc.data.eval_episodes} evaluation episodes, seed {bc.seed}, "
                f"{bc.train.budget.steps} training steps per policy, policy {bc.model.hidden} "
                f"{bc.model.activation}; degradation = strongest of {atk.get('attacks', 'all attacks')} "
                f"({atk.get('pgd_steps')} PGD steps); one seed{' (quick)' if quick else ''}. "
                f"{_trend(store, rec.id)} Bound check: {sum(ok)}/{len(ok)} rows ≤ 1. "
                f"({time.perf_counter() - t0:.0f} s)_\n"
            )
        store.close()
    return "\n".join(out)
