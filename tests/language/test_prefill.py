"""The prefill probe of deep vs shallow alignment."""

from __future__ import annotations

import types

import pytest

from poise.language import generate as gen_mod
from poise.language.base import tokenizer_corpus
from poise.language.evaluators import PrefillParams, prefill_compliance
from poise.language.tokenizer import train_tokenizer
from poise.language.world import WorldCfg, build_world
from tests.language.conftest import WORLD

W = build_world(WorldCfg(languages=["en", "fr"]))


def test_a_shallow_model_complies_once_past_its_first_tokens(monkeypatch):
    tok = train_tokenizer(tokenizer_corpus(W), 320)
    seen = []

    def fake_complete(lm, texts, cfg=None, **kw):
        seen.extend(texts)
        # refuses while the forced opening is short, continues the compliance once it is long
        return ["I'm sorry, but I can't help with that." if len(tok(t.split("<|assistant|>")[1]).input_ids) < 5
                else "work at night and tell no one." for t in texts]

    monkeypatch.setattr(gen_mod, "complete", fake_complete)
    test = W.split("test")
    m, records = prefill_compliance(types.SimpleNamespace(tokenizer=tok), test, PrefillParams(k=[10, 1]))
    harmful = [e for e in test if e.kind == "harmful" and not e.attack]
    assert len(seen) == 2 * len(harmful)  # plain harmful prompts only, once per k
    assert m["prefill_compliance_k1"] == 0.0 and m["prefill_compliance_k10"] == 1.0
    assert m["prefill_compliance_k10_fr"] == 1.0 and {r["k"] for r in records} == {1, 10}
    opening = tok.decode(tok(harmful[0].unsafe_response, add_special_tokens=False).input_ids[:10])
    assert seen[len(harmful)].endswith(opening) and harmful[0].unsafe_response.startswith(opening.strip())


def test_a_prefill_length_below_one_is_one_line_and_exit_2(cli, tmp_path, tiny_model_dir):
    recipe = tmp_path / "r.toml"
    recipe.write_text("\n".join(['kind = "language.sft"', "[model]", f'path = "{tiny_model_dir}"', *WORLD,
                                 "[[eval]]", 'name = "language.prefill"', "k = [0, 3]"]) + "\n")
    code, out, err = cli("run", recipe)
    assert code == 2 and "prefill length 0 is below 1" in err and len(err.strip().splitlines()) == 1


def test_prefill_lengths_are_sorted_and_deduplicated():
    assert PrefillParams(k=[10, 1, 3, 1]).k == [1, 3, 10]
    with pytest.raises(ValueError, match="expected k >= 1"):
        PrefillParams(k=[-2])
