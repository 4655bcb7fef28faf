"""End to end through the CLI: demos → BC → evaluators; bad input exits 2 with one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from poise.control.lipschitz.demos import read_demo_file
from poise.errors import UserError
from tests.conftest import RECIPES

BC = RECIPES / "control" / "lipschitz-bc-linear.toml"
TINY = [
    "--set",
    "train.budget.steps=30",
    "--set",
    "model.hidden=[8, 8]",
    "--set",
    "data.eval_episodes=3",
    "--set",
    "eval.1.eps=[0.1]",
    "--set",
    'eval.1.attacks=["pgd_action"]',
    "--set",
    "eval.1.pgd_steps=2",
    "--set",
    "eval.2.states=64",
    "--set",
    "eval.2.pairs=64",
]


def _demo_file(tmp_path: Path, obs: torch.Tensor, act: torch.Tensor, name: str = "demos.safetensors") -> Path:
    p = tmp_path / name
    if p.suffix == ".npz":
        np.savez(p, obs=obs.numpy(), act=act.numpy())
    else:
        save_file({"obs": obs.contiguous(), "act": act.contiguous()}, str(p))
    return p


def _store_metrics(tmp_path: Path) -> dict[str, float]:
    from poise.store import Store

    s = Store(root=tmp_path / ".poise")
    try:
        runs = s.list_runs(kind="control.lipschitz_bc", status="done")
        assert len(runs) == 1
        return {k: v.value for k, v in s.final_metrics([runs[0].id])[runs[0].id].items()}
    finally:
        s.close()


def test_bc_from_a_demo_file_runs_end_to_end(cli, tmp_path: Path) -> None:
    x = torch.rand(200, 2, dtype=torch.float64) * 2 - 1
    u = -(x @ torch.tensor([[3.0], [2.5]], dtype=torch.float64))
    f = _demo_file(tmp_path, x, u, "demos.npz")
    code, out, err = cli("run", BC, "--quick", "--set", f"data.file={f}", "--set", "data.demos=", *TINY)
    assert code == 0, err
    m = _store_metrics(tmp_path)
    assert m["robustness.bound_ratio"] <= 1 + 1e-6
    assert m["robustness.lip_lower"] <= m["robustness.lip_upper"] * (1 + 1e-9)
    assert m["robustness.lip_upper"] == pytest.approx(2.0, rel=1e-2)  # α
    assert m["robustness.action_bound"] == pytest.approx(m["robustness.lip_upper"] * 0.2)


@pytest.mark.parametrize(
    ("setting", "needle"),
    [
        ("model.alpha=0", "model.alpha"),
        ("model.alpha=-1", "model.alpha"),
        ("eval.1.eps=[-0.1]", "eval[1].eps"),
    ],
)
def test_bad_values_exit_2_with_one_line(cli, setting: str, needle: str) -> None:
    code, _, err = cli("run", BC, "--quick", "--set", setting)
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert needle in err


@pytest.mark.parametrize(
    ("obs", "act", "needle"),
    [
        (torch.zeros(0, 2), torch.zeros(0, 1), "empty"),
        (torch.zeros(10, 3), torch.zeros(10, 1), "state dimension 3"),
        (torch.zeros(10, 2), torch.zeros(9, 1), "rows"),
        (torch.zeros(10), torch.zeros(10, 1), "2-D"),
    ],
)
def test_bad_demo_files_exit_2_with_one_line(cli, tmp_path: Path, obs, act, needle: str) -> None:
    f = _demo_file(tmp_path, obs, act)
    code, _, err = cli("run", BC, "--quick", "--set", f"data.file={f}", "--set", "data.demos=")
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "data.file" in err and needle in err


def test_unreadable_and_missing_demo_files(tmp_path: Path) -> None:
    bad = tmp_path / "x.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(UserError, match="cannot read"):
        read_demo_file(bad, obs_dim=2, act_dim=1, where="r", field="data.file")
    with pytest.raises(UserError, match="no such file"):
        read_demo_file(tmp_path / "none.npz", obs_dim=2, act_dim=1, where="r", field="data.file")


def test_demos_and_file_are_exclusive(cli, tmp_path: Path) -> None:
    code, _, err = cli("run", BC, "--quick", "--set", f"data.file={tmp_path / 'd.npz'}")
    assert code == 2 and "exactly one of data.demos" in err and len(err.strip().splitlines()) == 1


def test_a_tuning_run_scores_initial_states_disjoint_from_the_test_ones(cli, tmp_path: Path) -> None:
    """eval_split = "val" draws the closed-loop evaluation states with a shifted seed: tuning never scores
    the test states (the expert's cost, which depends only on the states, tells them apart)."""
    from poise.control.lipschitz.bc import VAL_SEED_SHIFT, BCDataCfg, eval_states
    from poise.control.lipschitz.systems import SystemCfg, make_system

    system = make_system(SystemCfg())
    cfg = BCDataCfg(file=tmp_path / "d.npz", eval_episodes=16)
    test, val = eval_states(system, cfg, "test"), eval_states(system, cfg, "val")
    assert torch.equal(test, system.sample_initial(16, cfg.eval_seed))  # the test states are unchanged
    assert torch.equal(val, system.sample_initial(16, cfg.eval_seed + VAL_SEED_SHIFT))
    assert torch.cdist(val, test).min() > 0

    x = torch.rand(200, 2, dtype=torch.float64) * 2 - 1
    u = -(x @ torch.tensor([[3.0], [2.5]], dtype=torch.float64))
    f = _demo_file(tmp_path, x, u, "demos.npz")
    costs = {}
    for split in ("val", "test"):
        (tmp_path / split).mkdir()
        code, out, err = cli("--store", f"sqlite:///{tmp_path / split / 'poise.db'}", "run", BC, "--quick",
                             "--set", f"data.file={f}", "--set", "data.demos=", "--set", f"eval_split={split}", *TINY)
        assert code == 0, err
        from poise.store import Store

        s = Store(f"sqlite:///{tmp_path / split / 'poise.db'}")
        (run,) = s.list_runs(kind="control.lipschitz_bc", status="done")
        costs[split] = s.final_metrics([run.id])[run.id]["utility.expert_cost"].value
        s.close()
    assert costs["val"] != pytest.approx(costs["test"])
