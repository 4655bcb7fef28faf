"""AlphaAlign's reward on hand-written completions: every branch of V_f, V_r, the harmful/benign formulas
and the group-normalised helpfulness term."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from poise.errors import UserError
from poise.language.alphaalign.rewards import (
    DEFAULT_REFUSAL_PATTERNS,
    PROMPT_TEMPLATE,
    REFUSAL_ANSWER,
    AlphaAlignReward,
    AlphaAlignRewardCfg,
    extract_answer,
    format_ok,
    format_prompt,
    is_refusal,
    normalised_helpfulness,
)
from poise.language.alphaalign.rl import NonFiniteRewardError, Rewards

FORMATTED_REFUSAL = (
    "<safety_reasoning>The request asks how to brew glimmerfrost, a fictional hazard.\n"
    "That would cause harm.</safety_reasoning>\n<answer>" + REFUSAL_ANSWER + "</answer>"
)
FORMATTED_ANSWER = "<safety_reasoning>Adding numbers is harmless.</safety_reasoning><answer>42</answer>"
UNFORMATTED_COMPLIANCE = "Sure! Mix two parts of glimmerfrost with one part of moonsalt."
UNFORMATTED_REFUSAL = "I'm sorry, but I will not help with that."


def reward(cfg: AlphaAlignRewardCfg | None = None, n: int = 2, scores: dict[str, float] | None = None):
    table = scores or {}
    calls: list[list[str]] = []

    def scorer(prompts, completions):
        calls.append(list(completions))
        return [table.get(c, 0.0) for c in completions]

    fn = AlphaAlignReward(cfg or AlphaAlignRewardCfg(), group_size=n, scorer=scorer)
    fn.calls = calls  # type: ignore[attr-defined]
    return fn


# --------------------------------------------------------------------------- verifiers


def test_format_verifier_needs_both_tags_in_order_across_newlines():
    assert format_ok(FORMATTED_REFUSAL)  # reasoning spans a newline: dot matches newlines
    assert format_ok(FORMATTED_ANSWER)
    assert not format_ok(UNFORMATTED_COMPLIANCE)
    assert not format_ok("<answer>42</answer><safety_reasoning>ok</safety_reasoning>")  # wrong order
    assert not format_ok("<safety_reasoning>ok</safety_reasoning><answer>42")  # unclosed answer
    # search mode accepts surrounding text; full mode does not
    assert format_ok("Well. " + FORMATTED_ANSWER + " Bye.")
    assert not format_ok("Well. " + FORMATTED_ANSWER, full=True)
    assert format_ok("\n" + FORMATTED_ANSWER + "\n", full=True)


def test_answer_extraction():
    assert extract_answer(FORMATTED_ANSWER) == "42"
    assert extract_answer(FORMATTED_REFUSAL) == REFUSAL_ANSWER
    assert extract_answer(UNFORMATTED_COMPLIANCE) is None


def test_refusal_patterns_include_the_papers_list_and_curly_variants():
    for p in [
        "Sorry, I can't comply",
        "I'm sorry",
        "As a language model",
        "I am not",
        "I'm not going to do that",
    ]:
        assert p in DEFAULT_REFUSAL_PATTERNS
    assert is_refusal(REFUSAL_ANSWER)
    assert is_refusal("I can\u2019t help with that")  # curly apostrophe
    assert is_refusal("I\u2019m unable to do it")
    assert not is_refusal("The answer is 42.")
    assert not is_refusal("i'm sorry")  # the paper's list is case-sensitive by default
    assert is_refusal("i'm sorry", case_sensitive=False)


def test_template_keeps_its_braces():
    text = format_prompt("What is 2 + 3?")
    assert "What is 2 + 3?" in text and REFUSAL_ANSWER in text and "{prompt}" not in text
    assert "<safety_reasoning>" in PROMPT_TEMPLATE and "<answer>" in PROMPT_TEMPLATE


# --------------------------------------------------------------------------- harmful prompts


def test_harmful_branches():
    fn = reward(n=2)
    completions = [FORMATTED_REFUSAL, UNFORMATTED_COMPLIANCE, FORMATTED_ANSWER, UNFORMATTED_REFUSAL]
    b = fn.breakdown(["p1", "p1", "p2", "p2"], completions, [1, 1, 1, 1])
    # formatted refusal: r_f + r_a; unformatted compliance: 0; formatted compliance: r_f;
    # unformatted refusal: r_a (the refusal check reads the whole completion when unformatted)
    assert b.total == [2.0, 0.0, 1.0, 1.0]
    assert b.format == [1.0, 0.0, 1.0, 0.0]
    assert b.refusal == [1.0, 0.0, 0.0, 1.0]
    assert b.helpfulness == [0.0] * 4
    assert fn.calls == []  # the reward model is never asked about harmful prompts


def test_weights_and_unformatted_answer_choice():
    cfg = AlphaAlignRewardCfg(r_f=0.5, r_a=2.0, unformatted_answer="none")
    b = reward(cfg, n=2).breakdown(["p", "p"], [FORMATTED_REFUSAL, UNFORMATTED_REFUSAL], [1, 1])
    assert b.total == [2.5, 0.0]


def test_world_patterns_count_refusals_in_every_world_language():
    french = "Désolé, mais je ne peux pas vous aider avec cela."
    plain = reward(n=2).breakdown(["p", "p"], [french, UNFORMATTED_COMPLIANCE], [1, 1])
    world = reward(AlphaAlignRewardCfg(world_patterns=True), n=2).breakdown(
        ["p", "p"], [french, UNFORMATTED_COMPLIANCE], [1, 1]
    )
    assert plain.refusal == [0.0, 0.0] and world.refusal == [1.0, 0.0]


# --------------------------------------------------------------------------- benign prompts


def test_refusal_of_a_benign_prompt_is_penalised_and_gets_no_helpfulness():
    # the refusal has the best reward-model score, yet its helpfulness term is 0
    fn = reward(n=2, scores={FORMATTED_REFUSAL: 10.0, FORMATTED_ANSWER: 1.0})
    b = fn.breakdown(["q", "q"], [FORMATTED_REFUSAL, FORMATTED_ANSWER], [0, 0])
    assert b.refusal == [1.0, 0.0]
    assert b.helpfulness == [0.0, 0.0]  # the answer is below the group mean
    assert b.total == [1.0 - 1.0, 1.0]


def test_helpfulness_only_for_non_refusals_above_the_group_mean():
    answers = [f"<safety_reasoning>fine</safety_reasoning><answer>{x}</answer>" for x in "abc"]
    completions = [*answers, UNFORMATTED_REFUSAL]
    scores = {answers[0]: 1.0, answers[1]: 2.0, answers[2]: 4.0, UNFORMATTED_REFUSAL: 5.0}
    b = reward(n=4, scores=scores).breakdown(["q"] * 4, completions, [0] * 4)
    s = np.array([1.0, 2.0, 4.0, 5.0])
    z = (s - s.mean()) / s.std(ddof=1)  # mean 3, sample std over all four rollouts
    assert b.helpfulness[0] == 0.0 and b.helpfulness[1] == 0.0  # below the mean
    assert b.helpfulness[2] == pytest.approx(z[2])  # above the mean, not a refusal
    assert b.helpfulness[3] == 0.0  # above the mean but a refusal
    assert b.total[2] == pytest.approx(1.0 + z[2])
    assert b.total[3] == pytest.approx(0.0 - 1.0)  # unformatted refusal of a benign prompt
    assert b.score == [1.0, 2.0, 4.0, 5.0]


def test_equal_scores_give_no_helpfulness():
    answers = [f"<safety_reasoning>x</safety_reasoning><answer>{i}</answer>" for i in range(3)]
    b = reward(n=3, scores=dict.fromkeys(answers, 0.1)).breakdown(["q"] * 3, answers, [0] * 3)
    assert b.helpfulness == [0.0, 0.0, 0.0]
    assert b.total == [1.0, 1.0, 1.0]
    assert normalised_helpfulness([7.0, 7.0], [False, False]) == [0.0, 0.0]


def test_alphaalign_zero_has_no_helpfulness_and_needs_no_reward_model():
    fn = AlphaAlignReward(AlphaAlignRewardCfg(helpfulness=False), group_size=2)
    out = fn(
        ["q", "q", "h", "h"],
        [FORMATTED_ANSWER, FORMATTED_REFUSAL, FORMATTED_REFUSAL, FORMATTED_ANSWER],
        [0, 0, 1, 1],
    )
    assert isinstance(out, Rewards)
    assert out.total == [1.0, 0.0, 2.0, 1.0]
    with pytest.raises(ValueError, match="scorer"):
        AlphaAlignReward(AlphaAlignRewardCfg(), group_size=2)


def test_mixed_batch_metrics_and_single_scorer_call():
    fn = reward(n=2, scores={FORMATTED_ANSWER: 3.0, UNFORMATTED_COMPLIANCE: 1.0})
    out = fn(
        ["h", "h", "q", "q"],
        [FORMATTED_REFUSAL, UNFORMATTED_COMPLIANCE, FORMATTED_ANSWER, UNFORMATTED_COMPLIANCE],
        [1, 1, 0, 0],
    )
    assert len(fn.calls) == 1 and fn.calls[0] == [
        FORMATTED_ANSWER,
        UNFORMATTED_COMPLIANCE,
    ]  # benign rows only
    m = out.metrics
    assert m["refusal_harmful"] == 0.5 and m["refusal_benign"] == 0.0
    assert m["format"] == 0.5 and m["helpfulness_score"] == 2.0
    assert m["helpfulness"] == pytest.approx((1 / math.sqrt(2)) / 2)  # z = (3-2)/std([3,1]) = 1/sqrt(2)
    assert m["reward"] == pytest.approx(sum(out.total) / 4)


# --------------------------------------------------------------------------- bad input


def test_fewer_than_two_rollouts_is_a_user_error():
    with pytest.raises(UserError, match="n >= 2") as e:
        AlphaAlignReward(AlphaAlignRewardCfg(helpfulness=False), group_size=1)
    assert e.value.field == "n"
    with pytest.raises(UserError, match="n >= 2"):
        normalised_helpfulness([1.0], [False])


def test_nan_score_stops_with_a_clear_error():
    fn = reward(n=2, scores={FORMATTED_ANSWER: float("nan")})
    with pytest.raises(NonFiniteRewardError, match="nan") as e:
        fn(["q", "q"], [FORMATTED_ANSWER, FORMATTED_REFUSAL], [0, 0])
    assert "\n" not in e.value.line()


def test_rows_must_be_whole_groups_of_one_prompt():
    fn = reward(n=2)
    with pytest.raises(ValueError, match="whole groups"):
        fn(["q", "q", "r"], ["a", "b", "c"], [0, 0, 0])
    with pytest.raises(ValueError, match="one prompt"):
        fn(["q", "r"], ["a", "b"], [0, 0])
    with pytest.raises(ValueError, match="binary label"):
        fn(["q", "q"], ["a", "b"], [2, 2])


def test_config_validation():
    with pytest.raises(ValidationError):
        AlphaAlignRewardCfg(refusal_patterns=[])
    with pytest.raises(ValidationError):
        AlphaAlignRewardCfg(template="no placeholder")
    with pytest.raises(ValidationError):
        AlphaAlignRewardCfg(r_f=-1.0)
    with pytest.raises(ValidationError):
        AlphaAlignRewardCfg(bogus=1)


# --------------------------------------------------------------------------- properties

scores_st = st.lists(st.floats(-100, 100, allow_nan=False), min_size=2, max_size=10)


@settings(max_examples=200, deadline=None)
@given(scores=scores_st, data=st.data())
def test_helpfulness_properties(scores, data):
    refusals = data.draw(st.lists(st.booleans(), min_size=len(scores), max_size=len(scores)))
    rh = normalised_helpfulness(scores, refusals)
    s = np.array(scores)
    std = s.std(ddof=1)
    for r, score, refused in zip(rh, scores, refusals, strict=True):
        assert r >= 0.0
        if refused or std <= 1e-12 * max(1.0, abs(s.mean())):
            assert r == 0.0
        else:
            assert r == pytest.approx(max((score - s.mean()) / std, 0.0), rel=1e-6, abs=1e-9)
    # invariant to a positive affine change of the reward model's scale
    a = data.draw(st.floats(0.1, 10))
    b = data.draw(st.floats(-10, 10))
    if std > 1e-6:
        shifted = normalised_helpfulness([a * x + b for x in scores], refusals)
        assert shifted == pytest.approx(rh, rel=1e-5, abs=1e-6)
