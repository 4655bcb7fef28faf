"""The α sweep through the real runner (tiny recipes), its report, the Laplacian scheme, SB3 experts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from poise.recipes import build_recipe

K = torch.tensor([[3.0], [2.5]], dtype=torch.float64)


def _bc_recipe(tmp_path: Path, **model: object) -> Path:
    x = torch.rand(256, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1
    np.savez(tmp_path / "demos.npz", obs=x.numpy(), act=(-(x @ K)).numpy())
    extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in model.items())
    p = tmp_path / "bc.toml"
    p.write_text(f"""kind = "control.lipschitz_bc"
[model]
hidden = [8, 8]
{extra}
[data]
file = "{tmp_path / 'demos.npz'}"
eval_episodes = 2
[train]
budget = {{ steps = 40 }}
[[eval]]
name = "control.lipschitz_nominal"
[[eval]]
name = "control.lipschitz_attacks"
eps = [0.1]
attacks = ["pgd_action"]
pgd_steps = 1
[[eval]]
name = "control.lipschitz_certificate"
states = 64
pairs = 64
""")
    return p


def test_sweep_tabulates_every_alpha_and_the_report_draws_it(runner, store, tmp_path: Path) -> None:
    bc = _bc_recipe(tmp_path, alpha=1.0)
    spec = {"policy": str(bc), "alphas": [0.5, 4.0]}
    sweep = build_recipe({"kind": "control.lipschitz_sweep", "sweep": spec})
    rec = runner.run(sweep)
    assert rec.status == "done"
    children = store.list_runs(kind="control.lipschitz_bc", status="done")
    assert len(children) == 3  # baseline + 2 α
    from poise.control.lipschitz.report import lipschitz_section

    blocks = lipschitz_section(store, [rec])
    fig, table = blocks[0].figure, blocks[1].table
    assert [t.text for t in fig.data][0] == ("unconstrained", "α=0.5", "α=4")
    assert [row[0] for row in table[1]] == ["unconstrained", "α=0.5", "α=4"]
    uppers = [float(row[-3]) for row in table[1]]
    assert uppers[1] == pytest.approx(0.5, rel=1e-2) and uppers[2] == pytest.approx(4.0, rel=1e-2)
    assert lipschitz_section(store, children) == []  # only sweeps draw


def test_laplacian_scheme_lowers_the_lipschitz_constant_on_the_data(runner, store, tmp_path: Path) -> None:
    from poise.recipes import load_recipe

    bc = _bc_recipe(tmp_path, constraint="laplacian", alpha=1.0, graph_points=128, dual_lr=0.5)
    over = {"train.budget.steps": 300, "eval": [{"name": "control.lipschitz_certificate", "states": 256}]}
    lap = runner.run(load_recipe(bc, over))
    free = runner.run(load_recipe(bc, {**over, "model.constraint": "none", "model.alpha": None}))
    m = store.final_metrics([lap.id, free.id])
    lip_lap, lip_free = m[lap.id]["robustness.lip_lower"].value, m[free.id]["robustness.lip_lower"].value
    assert lip_free > 3.0  # fits ‖K‖ ≈ 3.9
    assert lip_lap < 0.75 * lip_free


def test_sb3_expert_is_rebuilt_from_its_state_dict() -> None:
    import stable_baselines3 as sb3

    from poise.control.lipschitz.experts import ExpertCfg, load_sb3_expert
    from poise.control.lipschitz.systems import SystemCfg, make_system

    system = make_system(SystemCfg())
    agent = sb3.PPO("MlpPolicy", system.gym_env(), seed=1, device="cpu", policy_kwargs={"net_arch": [16]})
    tensors = {k: v.clone() for k, v in agent.policy.state_dict().items()}
    expert = load_sb3_expert(tensors, {"algo": "ppo", "policy_kwargs": {"net_arch": [16]}}, system,
                             ExpertCfg(name="sb3", run="run:x"), "test")
    obs = torch.rand(5, 2, dtype=torch.float64)
    ref, _ = agent.predict(obs.numpy().astype(np.float32), deterministic=True)
    assert np.allclose(expert(obs).numpy(), ref, atol=1e-6)
