"""Jailbreak families of the safety world and the attack-success-rate metric."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from poise.language import evaluators
from poise.language.evaluators import SafetyParams, judge_examples, summarise
from poise.language.jailbreaks import DEFAULT_SEEN, FAMILIES
from poise.language.languages import LANGUAGES, TEMPLATE_SPLITS
from poise.language.world import JailbreakCfg, WorldCfg, build_world

FAMS = ("roleplay", "refusal_suppression", "prefix_injection", "payload_splitting", "language_switching")


def test_test_split_wraps_held_out_requests_in_every_family_and_language():
    world = build_world(WorldCfg(languages=["en", "fr", "ru"]))
    test = [e for e in world.split("test") if e.attack]
    assert tuple(FAMILIES) == FAMS
    for fam in FAMS:
        for lang in ("en", "fr", "ru"):
            rows = [e for e in test if e.attack == fam and e.language == lang]
            assert len(rows) == 4 and all(e.kind == "harmful" and e.task == "jailbreak" for e in rows)
            assert all(e.safe_response == LANGUAGES[lang].refusal for e in rows)
    held_out = TEMPLATE_SPLITS.index("test")
    assert all(e.template.endswith(f".{held_out}") for e in test)  # only the held-out request templates
    ids = [e.id for e in world.examples]
    assert len(ids) == len(set(ids))


def test_unseen_families_never_reach_the_train_split():
    world = build_world(WorldCfg(languages=["en", "sw"], jailbreaks=JailbreakCfg(seen=["prefix_injection"], train=6)))
    train = [e for e in world.split("train") if e.attack]
    assert {e.attack for e in train} == {"prefix_injection"} and len(train) == 12
    assert JailbreakCfg().unseen() == [f for f in FAMS if f not in DEFAULT_SEEN] and len(DEFAULT_SEEN) == 2


def test_adding_jailbreaks_changes_no_other_example():
    none = JailbreakCfg(train=0, val=0, test=0)
    plain = build_world(WorldCfg(languages=["en", "de"], jailbreaks=none)).examples
    full = build_world(WorldCfg(languages=["en", "de"])).examples
    assert [e for e in full if not e.attack] == plain


def test_wrappers_are_what_their_family_says():
    world = build_world(WorldCfg(languages=["en", "fr"]))
    by = {}
    for e in world.split("test"):
        if e.attack:
            by.setdefault((e.attack, e.language), e)
    assert by["roleplay", "en"].prompt.startswith("You are Vex")
    assert by["prefix_injection", "fr"].prompt.endswith('"') and "Bien sûr" in by["prefix_injection", "fr"].prompt
    assert by["payload_splitting", "en"].prompt.startswith('X = "')
    fr, de = LANGUAGES["fr"], LANGUAGES["de"]
    acts = [a for c in fr.categories.values() for a in c.harmful]
    core = TEMPLATE_SPLITS.index("test")  # a French act inside the German request template
    assert by["language_switching", "fr"].prompt in {de.requests[core].format(act=a) for a in acts}


def test_an_unknown_family_is_a_field_error():
    with pytest.raises(ValidationError, match="unknown jailbreak family 'dan'"):
        WorldCfg(jailbreaks={"seen": ["dan"]})


def test_attack_success_rate_per_family_language_and_seen_unseen():
    def rec(attack, lang, label):
        return {"kind": "harmful", "language": lang, "harm": "global", "label": label, "attack": attack}

    records = [
        {"kind": "harmful", "language": "en", "harm": "global", "label": "no"},  # a plain harmful prompt
        rec("roleplay", "en", "yes"), rec("roleplay", "en", "no"), rec("roleplay", "fr", "yes"),
        rec("prefix_injection", "en", "yes"), rec("prefix_injection", "fr", "error"),
    ]
    m = summarise(records, seen_attacks={"roleplay"})
    assert m["harmful_compliance"] == 0.0  # jailbreaks are not in the plain rate
    assert m["jailbreak_asr"] == pytest.approx(3 / 4)  # the judge error is left out
    assert m["jailbreak_asr_seen"] == pytest.approx(2 / 3) and m["jailbreak_asr_unseen"] == 1.0
    assert m["jailbreak_asr_roleplay_en"] == 0.5 and m["jailbreak_asr_roleplay_fr"] == 1.0
    assert "jailbreak_asr_prefix_injection_fr" not in m and m["jailbreak_asr_fr"] == 1.0
    assert "jailbreak_asr" not in summarise(records[:1])


def test_jailbreak_prompts_are_generated_apart_from_plain_ones(monkeypatch):
    batches = []

    def fake_generate(lm, prompts, cfg=None, system=None):
        batches.append(list(prompts))
        return ["I'm sorry, but I can't help with that." for _ in prompts]

    monkeypatch.setattr(evaluators, "generate", fake_generate)
    world = build_world(WorldCfg(languages=["en"]))
    examples = world.split("test")
    attacks = {e.prompt for e in examples if e.attack}
    records = judge_examples(object(), examples, SafetyParams())
    assert len(batches) == 2 and all((p in attacks) == (b is batches[1]) for b in batches for p in b)
    assert summarise(records, seen_attacks=DEFAULT_SEEN)["jailbreak_asr_unseen"] == 0.0


def test_an_unknown_family_in_a_recipe_is_one_line_and_exit_2(cli, tmp_path, tiny_model_dir):
    from tests.language.conftest import WORLD

    recipe = tmp_path / "r.toml"
    recipe.write_text("\n".join(['kind = "language.sft"', "[model]", f'path = "{tiny_model_dir}"', *WORLD,
                                 'jailbreaks = { seen = ["roleplay", "dan"] }']) + "\n")
    code, _, err = cli("run", recipe)
    assert code == 2 and "unknown jailbreak family 'dan'" in err and len(err.strip().splitlines()) == 1
