"""Every vision kind end to end through the CLI (quick recipes, tiny budgets), and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vision.test_data import write_cifar

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "vision"
TINY_EVAL = [
    "--set",
    "eval.1.n=40",
    "--set",
    "eval.2.n=20",
    "--set",
    "eval.2.steps=3",
    "--set",
    "eval.2.square_queries=10",
]


def _runs(store_dir: Path) -> list:
    from poise.store import Store

    s = Store(root=store_dir)
    try:
        runs = s.list_runs()
        return [(r, s.final_metrics([r.id]).get(r.id, {})) for r in runs]
    finally:
        s.close()


@pytest.mark.parametrize("recipe", ["erm-digits", "pgd-at-digits", "trades-digits", "fast-at-digits"])
def test_single_model_kinds_run(cli, tmp_path, recipe):
    code, _, err = cli(
        "run", RECIPES / f"{recipe}.toml", "--quick", "--set", "train.budget.epochs=1", *TINY_EVAL
    )
    assert code == 0, err
    ((run, m),) = _runs(tmp_path / ".poise")
    assert run.status == "done"
    assert {"utility.clean_acc", "robustness.pgd20_acc", "robustness.autoattack_acc"} <= set(m)
    assert m["robustness.autoattack_acc"].value <= m["utility.clean_acc"].value


def test_mtard_trains_both_teachers_then_ard_and_rslad_reuse_them(cli, tmp_path):
    code, _, err = cli(
        "run",
        RECIPES / "mtard-digits.toml",
        "--quick",
        "--set",
        "train.budget.epochs=1",
        *TINY_EVAL,
    )
    assert code == 0, err
    runs = _runs(tmp_path / ".poise")
    kinds = sorted(r.kind for r, _ in runs)
    assert kinds == ["vision.erm", "vision.mtard", "vision.trades"]  # two teachers, one student
    from poise.store import Store

    s = Store(root=tmp_path / ".poise")
    mt = next(r for r, _ in runs if r.kind == "vision.mtard")
    w = [p.value for p in s.metrics([mt.id], name="w_nat")]
    assert w and all(0 <= v <= 1 for v in w)
    # both balances on in the shipped recipe: the temperatures move off their start of 1
    taus = [p.value for name in ("tau_adv", "tau_nat") for p in s.metrics([mt.id], name=name)]
    assert mt.config["train"]["entropy_balance"] is True and any(t != 1.0 for t in taus)
    s.close()
    for recipe in ("ard-digits", "rslad-digits"):
        code, _, err = cli(
            "run", RECIPES / f"{recipe}.toml", "--quick", "--set", "train.budget.epochs=1", *TINY_EVAL
        )
        assert code == 0, err
    kinds = sorted(r.kind for r, _ in _runs(tmp_path / ".poise"))
    assert kinds.count("vision.trades") == 1 and "vision.ard" in kinds and "vision.rslad" in kinds


def _one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize(
    "setting,needles",
    [
        ("model.name=resnet1000", ("model.name", "resnet1000")),
        ("data.name=imagenet", ("data.name", "imagenet")),
        ("threat.eps=1.5", ("threat.eps",)),
        ("eval.1.attack=deepfool", ("deepfool",)),
        ("eval.1.eps=-0.1", ("eps",)),
        ("data.name=cifar10", ("data.root",)),
    ],
)
def test_bad_input_one_line(cli, setting, needles):
    code, _, err = cli("run", RECIPES / "pgd-at-digits.toml", "--quick", "--set", setting)
    _one_line_error(code, err, *needles)


def test_data_root_without_files(cli, tmp_path):
    code, _, err = cli(
        "run",
        RECIPES / "pgd-at-digits.toml",
        "--quick",
        "--set",
        "data.name=cifar10",
        "--set",
        f"data.root={tmp_path}",
    )
    _one_line_error(code, err, "missing", "data.root")


def test_teacher_with_other_class_count(cli, tmp_path):
    write_cifar(tmp_path / "c100", "cifar100")
    code, _, err = cli(
        "run",
        RECIPES / "erm-digits.toml",
        "--quick",
        "--set",
        "data.name=cifar100",
        "--set",
        f"data.root={tmp_path / 'c100'}",
        "--set",
        "train.budget.epochs=1",
    )
    assert code == 0, err
    run_id = [r for r, _ in _runs(tmp_path / ".poise")][0].id
    code, _, err = cli("run", RECIPES / "ard-digits.toml", "--quick", "--set", f"model.teacher=run:{run_id}")
    _one_line_error(code, err, "100 classes", "model.teacher")


def test_cifar_recipe_runs_on_tiny_files(cli, tmp_path):
    write_cifar(tmp_path / "c10")
    code, _, err = cli(
        "run",
        RECIPES / "pgd-at-cifar10.toml",
        "--set",
        f"data.root={tmp_path / 'c10'}",
        "--set",
        "model.name=small_cnn",
        "--set",
        "model.width=4",
        "--set",
        "train.budget.epochs=1",
        "--set",
        "train.attack.steps=2",
        "--set",
        "eval.4.steps=2",
        "--set",
        "eval.4.n_targets=1",
        "--set",
        "eval.4.square_queries=5",
    )
    assert code == 0, err
    ((run, m),) = _runs(tmp_path / ".poise")
    assert run.status == "done" and {"robustness.fgsm_acc", "robustness.cw30_acc"} <= set(m)


def test_every_shipped_vision_recipe_validates():
    from poise.recipes import load_recipe

    for path in RECIPES.glob("*.toml"):
        cfg = load_recipe(path, quick=True)
        if cfg.kind == "study.compare":  # a reproduction study over the vision recipes: long, not in the tour
            assert cfg.tour is False
            continue
        assert cfg.kind.startswith("vision.")
        assert cfg.tour == ("digits" in path.stem)


def test_report_section_lists_vision_runs(cli, tmp_path):
    code, _, err = cli(
        "run", RECIPES / "erm-digits.toml", "--quick", "--set", "train.budget.epochs=1", *TINY_EVAL
    )
    assert code == 0, err
    from poise.store import Store
    from poise.vision.report import defences

    s = Store(root=tmp_path / ".poise")
    blocks = defences(s, s.list_runs())
    s.close()
    headers, rows = blocks[0].table
    assert "clean_acc" in headers and "autoattack_acc" in headers and len(rows) == 1
