"""Labelled prompt files and helpfulness reward models: real files in their formats, bad input as one line."""

from __future__ import annotations

import json

import pytest

from poise.errors import UserError
from poise.language.alphaalign.helpfulness import HFRewardModelScorer, VerifierScorer
from poise.language.alphaalign.prompts import PromptsCfg, load_prompt_file, select


def test_prompt_file_jsonl_and_csv_give_binary_labels(tmp_path):
    rows = [
        {"prompt": "How do I brew the glowing toxin?", "label": "harmful"},
        {"prompt": "What is 2 plus 3?", "label": "benign", "answer": "5"},
        {"prompt": "How do I kill a stuck process?", "label": "borderline"},
        {"prompt": "x", "label": 1},
        {"prompt": "y", "label": "0"},
    ]
    jl = tmp_path / "p.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    got = load_prompt_file(PromptsCfg(file=jl))
    assert [p.label for p in got] == [1, 0, 0, 1, 0] and got[1].answer == "5"
    csv = tmp_path / "p.csv"
    csv.write_text("text,harm\nsome prompt,unsafe\nother,safe\n", encoding="utf-8")
    got = load_prompt_file(PromptsCfg(file=csv, prompt_column="text", label_column="harm"))
    assert [(p.prompt, p.label) for p in got] == [("some prompt", 1), ("other", 0)]


def test_prompt_file_without_labels_is_a_user_error(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a"}\n', encoding="utf-8")
    with pytest.raises(UserError, match="label"):
        load_prompt_file(PromptsCfg(file=f))
    f.write_text('{"prompt": "a", "label": "maybe"}\n', encoding="utf-8")
    with pytest.raises(UserError, match="expected harmful"):
        load_prompt_file(PromptsCfg(file=f))


def test_select_rebalances_to_the_harmful_share():
    from poise.language.alphaalign.prompts import LabelledPrompt

    pool = [LabelledPrompt(f"h{i}", 1) for i in range(3)] + [LabelledPrompt(f"b{i}", 0) for i in range(30)]
    got = select(pool, PromptsCfg(harmful_frac=0.5, limit=20), seed=0)
    assert len(got) == 20 and sum(p.label for p in got) == 10
    assert select(pool, PromptsCfg(harmful_frac=0.5, limit=20), seed=0) == got  # seeded


def test_verifier_scores_exact_answers_above_wrong_ones():
    scorer = VerifierScorer(
        {"q": ("42", None), "b": (None, "Here is how to do it safely.")}, length_weight=0.1
    )
    right, wrong, tagged = scorer(
        ["q", "q", "q"], ["42.", "41", "<safety_reasoning>ok</safety_reasoning><answer>42</answer>"]
    )
    assert right == pytest.approx(1.1) and tagged == pytest.approx(1.1) and wrong < 0.2
    long, close = scorer(["b", "b"], ["no", "Here is how to do it safely!"])
    assert close > long and scorer(["unknown"], ["anything"]) == [0.0]


def test_hf_reward_model_by_path_scores_and_rejects_a_causal_lm(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    from poise.language.alphaalign.toy import toy_tokenizer

    tok = toy_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        num_labels=1,
        pad_token_id=tok.pad_token_id,
    )
    LlamaForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    scores = HFRewardModelScorer(tmp_path / "rm")(["a b ", "a b "], ["c", "d d"])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "lm")
    with pytest.raises(UserError, match="sequence-classification"):
        HFRewardModelScorer(tmp_path / "lm")
    with pytest.raises(UserError, match="config.json"):
        HFRewardModelScorer(tmp_path / "missing")
