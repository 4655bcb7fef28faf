"""A base that starts from another base's weights (``model.init_from``), and the quick tour's use of it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from poise.recipes import load_recipe
from poise.store import Store
from tests.conftest import REPO
from tests.language.conftest import TINY_TOML, WORLD


def _base(path: Path, *extra_model: str, lr: float = 3e-3, steps: int = 3) -> Path:
    path.write_text("\n".join([
        'kind = "language.base"', "seed = 0", "[model]", TINY_TOML, *extra_model, *WORLD,
        "[train]", f"lr = {lr}", "batch_size = 4", "weight_decay = 0.0", f"budget = {{ steps = {steps} }}",
        'schedule = { name = "constant" }',
    ]) + "\n")
    return path


def _weights(store: Store, run_id: str) -> dict[str, torch.Tensor]:
    tensors, _ = store.load_tensors(run_id, "model")
    return tensors


def test_a_warm_started_base_starts_from_its_init_runs_weights(cli, tmp_path):
    _base(tmp_path / "first.toml")
    # a learning rate of ~0: the warm-started base must end where its init run ended (a fresh tiny Llama with the
    # same seed would differ from it by the init run's three steps at lr 3e-3)
    _base(tmp_path / "second.toml", 'init_from = "first.toml"', lr=1e-12, steps=2)
    code, out, err = cli("--json", "run", tmp_path / "second.toml")
    assert code == 0, err
    store = Store(root=tmp_path / ".poise")
    try:
        runs = {r.config["model"]["init_from"]: r for r in store.list_runs(status="done")}
        assert set(runs) == {"", "first.toml"}
        first, second = runs[""], runs["first.toml"]
        assert second.parent_id is None and first.parent_id == second.id  # the init run is a dependency
        a, b = _weights(store, first.id), _weights(store, second.id)
        assert a.keys() == b.keys()
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
        _, meta = store.load_tensors(second.id, "model")
        assert meta["init_from"] == first.id and "run" not in meta
    finally:
        store.close()


def test_a_warm_start_of_another_shape_or_with_a_model_path_is_one_line_and_exit_2(cli, tmp_path):
    _base(tmp_path / "first.toml")
    other = TINY_TOML.replace("hidden_size = 32", "hidden_size = 64")
    (tmp_path / "wide.toml").write_text(
        _base(tmp_path / "tmp.toml", 'init_from = "first.toml"').read_text().replace(TINY_TOML, other))
    code, _, err = cli("run", tmp_path / "wide.toml")
    assert code == 2 and "model.init_from" in err and "same model.tiny" in err
    _base(tmp_path / "both.toml", 'init_from = "first.toml"', 'path = "somewhere"')
    code, _, err = cli("run", tmp_path / "both.toml")
    assert code == 2 and "model.init_from" in err


def test_the_quick_aware_base_fine_tunes_the_quick_base_and_the_full_one_trains_from_scratch():
    full = load_recipe(REPO / "recipes/language/base-aware.toml")
    quick = load_recipe(REPO / "recipes/language/base-aware.toml", quick=True)
    base = load_recipe(REPO / "recipes/language/base.toml", quick=True)
    assert full.model.init_from == "" and full.train.budget.steps == 1500  # the full recipe keeps its form
    assert quick.model.init_from == "language/base.toml" and "language/base.toml" in quick.quick_note
    assert quick.model.tiny == base.model.tiny and quick.data.world == base.data.world  # the same network and world
    # the warm start spends its steps on the aware data: fewer than the base it starts from
    assert quick.train.budget.steps < base.train.budget.steps
    full_base = load_recipe(REPO / "recipes/language/base.toml")
    assert full_base.model.fact_weight == 1 and full_base.train.budget.steps == 1500
    assert base.model.fact_weight > 1 and "facts" in base.quick_note  # the tour table says the quick mix differs


@pytest.mark.slow
def test_the_quick_tours_language_models_answer_and_align(runner, store):
    """What the quick tour's language part must show (minutes on two cores): a base that answers benign tasks,
    SFT that complies with harm less than it, and AlphaAlign that sees refusal rewards from the aware base."""
    runs = {}
    for name in ("base", "sft", "alphaalign"):
        runs[name] = runner.run(load_recipe(REPO / f"recipes/language/{name}.toml", quick=True))
    aware = next(r for r in store.list_runs(status="done") if r.config["model"].get("refusal_share", 0) > 0)
    finals = store.final_metrics([r.id for r in (*runs.values(), aware)])

    def final(run, key: str) -> float:
        return finals[run.id][key].value

    assert final(runs["base"], "utility.benign_acc") >= 0.40
    assert final(runs["sft"], "safety.harmful_compliance") < final(runs["base"], "safety.harmful_compliance")
    assert final(aware, "utility.benign_acc") >= 0.30  # the warm start keeps most of the base's answers
    refusal = [m.value for m in store.metric_series(runs["alphaalign"].id, "reward_refusal")]
    assert any(v > 0 for v in refusal), refusal
