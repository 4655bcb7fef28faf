"""`language.alphaalign` end to end on a tiny model: logging, evaluation, artifact, bad input, NaN stop."""

from __future__ import annotations

import pytest

from poise.store import Store

pytest.importorskip("poise.language.evaluators", reason="needs the language lab (branch language)")


def _store(tmp_path) -> Store:
    return Store(root=tmp_path / ".poise")


def test_ppo_run_logs_reward_parts_refusal_rates_and_kl_then_evaluates(cli, tmp_path, tiny_alphaalign):
    code, out, err = cli("--quiet", "run", tiny_alphaalign)
    assert code == 0, err
    store = _store(tmp_path)
    (run,) = store.list_runs(kind="language.alphaalign")
    names = {(m.name, m.step) for m in store.metrics([run.id]) if m.axis == "train"}
    for name in (
        "reward",
        "reward_format",
        "reward_refusal",
        "refusal_harmful",
        "refusal_benign",
        "kl",
        "time_generation",
        "time_reward",
        "time_update",
    ):
        assert {(name, 0), (name, 1)} <= names or name in ("refusal_harmful", "refusal_benign")
    assert any(n == "kl" for n, _ in names) and any(n == "reward_helpfulness" for n, _ in names)
    final = store.final_metrics([run.id])[run.id]
    assert {"safety.harmful_compliance", "safety.over_refusal", "utility.benign_acc"} <= set(final)

    from poise.language.alphaalign.report import alphaalign_curves

    (block,) = alphaalign_curves(store, [run])
    titles = {t.name for t in block.figure.data}
    assert len(block.figure.data) >= 5 and titles == {f"{run.name} [{run.id[:6]}]"}

    from poise.language.models import load_lm

    lm = load_lm(store, run)
    assert lm.model.config.hidden_size == 32
    store.close()


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("n=1", "n >= 2"),
        ("helpfulness.source='path'", "helpfulness.path"),
    ],
)
def test_bad_recipe_values_exit_2_with_one_line(cli, tiny_alphaalign, override, needle):
    code, out, err = cli("--quiet", "run", tiny_alphaalign, "--set", override)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err


def test_prompt_file_without_labels_and_causal_lm_as_reward_model_exit_2(cli, tmp_path, tiny_alphaalign):
    f = tmp_path / "prompts.jsonl"
    f.write_text('{"prompt": "hello"}\n', encoding="utf-8")
    code, _, err = cli("--quiet", "run", tiny_alphaalign, "--set", f"prompts.file='{f}'")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "label" in err

    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=32,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    ).save_pretrained(tmp_path / "lm")
    code, _, err = cli(
        "--quiet",
        "run",
        tiny_alphaalign,
        "--set",
        "helpfulness.source='path'",
        "--set",
        f"helpfulness.path='{tmp_path / 'lm'}'",
    )
    assert code == 2 and len(err.strip().splitlines()) == 1 and "sequence-classification" in err


def test_nan_reward_stops_with_a_clear_line_and_the_run_resumes(cli, tmp_path, tiny_alphaalign, monkeypatch):
    from poise.language.alphaalign import helpfulness

    real = helpfulness.VerifierScorer.__call__
    monkeypatch.setattr(helpfulness.VerifierScorer, "__call__", lambda self, p, c: [float("nan")] * len(p))
    code, _, err = cli("--quiet", "run", tiny_alphaalign)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nan" in err.lower()
    store = _store(tmp_path)
    (run,) = store.list_runs(kind="language.alphaalign")
    assert run.status == "failed" and store.latest_checkpoint(run.id) is not None
    monkeypatch.setattr(helpfulness.VerifierScorer, "__call__", real)
    code, _, err = cli("--quiet", "runs", "resume", run.id)
    assert code == 0, err
    assert store.get_run(run.id).status == "done"
    store.close()


def test_grpo_run_logs_the_same_step_metrics(cli, tmp_path, tiny_alphaalign):
    code, _, err = cli(
        "--quiet", "run", tiny_alphaalign, "--set", "algo='grpo'", "--set", "reward.helpfulness=false"
    )
    assert code == 0, err
    store = _store(tmp_path)
    (run,) = store.list_runs(kind="language.alphaalign")
    names = {(m.name, m.step) for m in store.metrics([run.id]) if m.axis == "train"}
    assert {("reward", 0), ("reward", 1), ("time_generation", 1), ("reward_refusal", 1)} <= names
    assert "safety.harmful_compliance" in store.final_metrics([run.id])[run.id]
    store.close()


def test_reward_model_learns_world_preferences_and_drives_alphaalign(cli, tmp_path, tiny_alphaalign):
    """A Bradley-Terry reward model trained with TRL's loss ranks validation pairs, and AlphaAlign uses it."""
    from tests.language.conftest import TINY_TOML, WORLD

    base = tmp_path / "base.toml"
    base.write_text("\n".join([
        'kind = "language.base"', "[model]", TINY_TOML, *WORLD,
        "[train]", "lr = 3e-3", "batch_size = 8", "budget = { steps = 2 }"]) + "\n")
    rm = tmp_path / "reward-model.toml"
    rm.write_text("\n".join([
        'kind = "language.reward_model"', "[model]", 'base = "base.toml"', *WORLD,
        "[train]", "lr = 3e-3", "batch_size = 16", "budget = { steps = 30 }",
        "[[eval]]", 'name = "language.reward_accuracy"']) + "\n")
    code, _, err = cli("--quiet", "run", rm)
    assert code == 0, err
    store = _store(tmp_path)
    (run,) = store.list_runs(kind="language.reward_model")
    final = store.final_metrics([run.id])[run.id]
    assert final["utility.reward_accuracy"].value >= 0.75  # chance is 0.5
    losses = sorted((m.step, m.value) for m in store.metrics([run.id]) if m.name == "loss")
    assert losses[-1][1] < losses[0][1]

    code, _, err = cli("--quiet", "run", tiny_alphaalign, "--set", "helpfulness.source='reward_model'",
                       "--set", "helpfulness.reward_model='reward-model.toml'")
    assert code == 0, err
    assert (tmp_path / ".poise" / "checkpoints").exists()
    (aa,) = store.list_runs(kind="language.alphaalign")
    assert any(m.name == "reward_helpfulness" for m in store.metrics([aa.id]))


def test_reward_model_source_needs_a_reward_model_run(cli, tmp_path, tiny_alphaalign):
    code, _, err = cli("--quiet", "run", tiny_alphaalign, "--set", "helpfulness.source='reward_model'")
    assert code == 2 and "helpfulness.reward_model" in err and len(err.strip().splitlines()) == 1
