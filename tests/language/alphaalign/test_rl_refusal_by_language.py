"""Per-language refusal rates over RL steps: logged from the rollouts at every step, drawn in the language report."""

from __future__ import annotations

import pytest

from poise.language.alphaalign.rewards import AlphaAlignReward, AlphaAlignRewardCfg
from poise.store import Store

pytest.importorskip("poise.language.evaluators", reason="needs the language lab (branch language)")


def test_reward_reports_refusal_rates_per_language_from_its_rows():
    reward = AlphaAlignReward(AlphaAlignRewardCfg(helpfulness=False), group_size=2,
                              languages={"h-en": "en", "h-fr": "fr", "b-en": "en"})
    prompts = ["h-en", "h-en", "h-fr", "h-fr", "b-en", "b-en"]
    completions = ["I cannot", "sure", "I cannot", "I cannot", "I cannot", "ok"]
    m = reward(prompts, completions, [1, 1, 1, 1, 0, 0]).metrics
    assert m["refusal_harmful_en"] == 0.5 and m["refusal_harmful_fr"] == 1.0
    assert m["refusal_benign_en"] == 0.5 and "refusal_benign_fr" not in m  # no benign French row this batch
    assert m["refusal_harmful"] == 0.75


@pytest.mark.parametrize("algo", ["ppo", "grpo"])
def test_tiny_run_logs_per_language_rates_and_the_report_draws_them(cli, tmp_path, tiny_alphaalign, algo):
    code, _, err = cli("--quiet", "run", tiny_alphaalign, "--set", f"algo='{algo}'", "--set",
                       "reward.helpfulness=false", "--set", "train.batch_size=4", "--set",
                       "train.budget.steps=3", "--set", "prompts.harmful_frac=0.5")
    assert code == 0, err
    store = Store(root=tmp_path / ".poise")
    (run,) = store.list_runs(kind="language.alphaalign")
    langs = run.config["data"]["world"]["languages"]
    assert langs == ["en", "fr"]
    rows = [m for m in store.metrics([run.id]) if m.axis == "train"]
    for group in ("harmful", "benign"):
        per_lang = {lang: [m for m in rows if m.name == f"refusal_{group}_{lang}"] for lang in langs}
        for lang, logged in per_lang.items():
            assert logged, f"no refusal_{group}_{lang} logged"
            assert all(0.0 <= m.value <= 1.0 for m in logged)
            assert {m.step for m in logged} <= {0, 1, 2}
    for step in (0, 1, 2):  # every step logs the rates of the languages its rollouts had
        assert any(m.name.startswith(("refusal_harmful_", "refusal_benign_")) and m.step == step for m in rows)

    from poise.language.report import rl_refusal_by_language
    from poise.report.blocks import report_sections

    assert report_sections(["language"])["language.rl_refusal"][1] is rl_refusal_by_language

    (block,) = rl_refusal_by_language(store, [run])
    drawn = {(t.name, t.xaxis) for t in block.figure.data}
    assert {lang for lang, _ in drawn} == set(langs) and {ax for _, ax in drawn} == {"x", "x2"}
    for t in block.figure.data:
        assert all(0.0 <= y <= 1.0 for y in t.y)
    store.close()


def test_rolling_mean_of_the_report_lines():
    from hypothesis import given
    from hypothesis import strategies as st

    from poise.language.report import rolling_mean

    assert rolling_mean([0.0, 1.0, 1.0, 0.0], 2) == [0.0, 0.5, 1.0, 0.5]

    @given(st.lists(st.floats(0.0, 1.0), max_size=40), st.integers(1, 12))
    def bounded(values, window):
        out = rolling_mean(values, window)
        assert len(out) == len(values)
        for i, m in enumerate(out):
            seen = values[max(0, i - window + 1): i + 1]
            assert min(seen) - 1e-9 <= m <= max(seen) + 1e-9
            assert abs(m - sum(seen) / len(seen)) < 1e-9

    bounded()
