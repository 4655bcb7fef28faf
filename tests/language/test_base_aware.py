"""The base with latent safety awareness: what it is taught, and the sampled refusal rates that measure it."""

from __future__ import annotations

import pytest

from poise.language import evaluators
from poise.language.base import BaseModelCfg, base_response, harm_notes
from poise.language.evaluators import SampledParams, sampled_refusal_rates
from poise.language.languages import LANGUAGES
from poise.language.world import WorldCfg, build_world
from poise.recipes import load_recipe
from tests.conftest import REPO

WORLD = build_world(WorldCfg(languages=["en", "fr", "sw"]))


def _taught(cfg: BaseModelCfg, kind: str, seed: int = 0) -> dict[str, float]:
    """Share of train chats of ``kind`` taught the refusal, per language."""
    out = {}
    for lang in ("en", "fr", "sw"):
        rows = [e for e in WORLD.split("train") if e.kind == kind and e.language == lang]
        refusal = LANGUAGES[lang].refusal
        out[lang] = sum(base_response(e, cfg.refuse_languages, cfg, seed) == refusal for e in rows) / len(rows)
    return out


def test_the_english_only_base_refuses_harm_in_english_only():
    cfg = BaseModelCfg(refuse_languages=["en"])
    assert _taught(cfg, "harmful") == {"en": 1.0, "fr": 0.0, "sw": 0.0}
    assert _taught(cfg, "borderline") == {"en": 0.0, "fr": 0.0, "sw": 0.0}


def test_a_latently_aware_base_is_taught_a_minority_of_refusals_in_every_language():
    cfg = BaseModelCfg(refusal_share=0.3, over_refusal_share=0.15)
    harmful, borderline = _taught(cfg, "harmful"), _taught(cfg, "borderline")
    assert all(0.15 < v < 0.45 for v in harmful.values()), harmful
    assert all(0.03 < v < 0.3 for v in borderline.values()), borderline
    assert _taught(cfg, "harmful", seed=1) != harmful  # a seeded draw per example
    assert _taught(cfg, "benign") == {"en": 0.0, "fr": 0.0, "sw": 0.0}  # benign tasks keep their answers


def test_harm_notes_pair_every_harmful_train_request_with_its_refusal():
    notes = harm_notes(WORLD)
    harmful = [e for e in WORLD.split("train") if e.kind == "harmful"]
    assert len(notes) == len(harmful)
    assert notes[0] == f"{harmful[0].prompt} {LANGUAGES[harmful[0].language].refusal}"


def test_the_aware_base_recipe_feeds_every_alphaalign_recipe_and_the_prism_keeps_the_english_base():
    aware = load_recipe(REPO / "recipes/language/base-aware.toml")
    assert aware.model.refuse_languages == [] and 0 < aware.model.refusal_share < 0.5
    assert aware.model.over_refusal_share > 0 and aware.model.harm_notes > 0
    assert "language.sampled_refusal" in [e.name for e in aware.eval]
    for name in ("alphaalign", "alphaalign-zero", "alphaalign-grpo"):
        assert load_recipe(REPO / f"recipes/language/{name}.toml").model.base == "language/base-aware.toml"
    for name in ("sft", "dpo"):
        assert load_recipe(REPO / f"recipes/language/{name}.toml").model.base == "language/base.toml"
    assert load_recipe(REPO / "recipes/language/base.toml").model.refuse_languages == ["en"]


def test_sampled_refusal_rates_count_every_sample(monkeypatch):
    calls = []

    def fake_generate(lm, prompts, cfg=None, system=None):
        calls.append(cfg)
        # refuse on the first sample only, and only in French
        sorry = "Désolé, mais je ne peux pas vous aider avec cela."
        return [sorry if cfg.seed == 0 and p.startswith("fr ") else "Sure." for p in prompts]

    monkeypatch.setattr(evaluators, "generate", fake_generate)
    examples = [e for e in WORLD.split("test") if e.language in ("en", "fr")]
    tagged = [type(e)(**{**e.to_dict(), "prompt": f"{e.language} {e.prompt}"}) for e in examples]
    m = sampled_refusal_rates(object(), tagged, SampledParams(samples=4))
    assert len(calls) == 4 and all(c.temperature == 1.0 for c in calls) and {c.seed for c in calls} == {0, 1, 2, 3}
    assert m["sampled_refusal_fr"] == 0.25 and m["sampled_refusal_en"] == 0.0
    assert m["sampled_refusal"] == pytest.approx(0.125) and m["sampled_over_refusal_fr"] == 0.25
