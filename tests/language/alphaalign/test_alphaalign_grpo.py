"""The GRPO adapter trains offline with the same reward function as PPO and reports its step split."""

from __future__ import annotations

import os

import pytest
import torch

from poise.language.alphaalign.grpo import GRPOAdapter, GRPOCfg
from poise.language.alphaalign.rewards import AlphaAlignReward, AlphaAlignRewardCfg
from poise.language.alphaalign.rl import NonFiniteRewardError, Rewards
from poise.language.alphaalign.toy import toy_model, toy_prompts, toy_reward, toy_tokenizer


def test_grpo_trains_a_few_steps_offline_with_our_reward(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tok = toy_tokenizer()
    model = toy_model(tok, seed=0)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    prompts, labels = toy_prompts(16, seed=0)
    n = 4
    seen_batches: list[list[str]] = []

    def reward(ps, completions, ls):
        seen_batches.append(list(ps))
        # TRL keeps a prompt's n rollouts next to each other, as the AlphaAlign reward requires
        for g in range(0, len(ps), n):
            assert len(set(ps[g : g + n])) == 1 and len(set(ls[g : g + n])) == 1
        base = toy_reward(ps, completions, ls)
        return Rewards(base, {"reward": sum(base) / len(base), "format": 0.5})

    steps: list = []
    cfg = GRPOCfg(n_rollouts=n, prompts_per_step=2, max_new_tokens=3, lr=3e-3, kl_coef=0.05)
    adapter = GRPOAdapter(model, tok, reward, prompts, labels, cfg, steps=3, seed=0, output_dir=tmp_path,
                          on_step=steps.append)  # fmt: skip
    results = adapter.train()

    assert [r.step for r in results] == [1, 2, 3] and steps == results
    assert len(seen_batches) == 3 and all(len(b) == 2 * n for b in seen_batches)
    for r in results:
        assert r.metrics["format"] == 0.5 and 0.0 <= r.metrics["reward"] <= 1.0
        assert "kl" in r.metrics  # kl_coef > 0: TRL built the reference from the saved starting policy
        assert r.timing.generation > 0 and r.timing.update > 0 and r.timing.reward >= 0
        assert r.metrics["time_step"] == pytest.approx(r.timing.total)
        assert len(r.completions) == 2 * n
    assert (tmp_path / "reference" / "config.json").exists()
    assert model.config._name_or_path == ""  # restored after TRL read it
    changed = [k for k, v in adapter.model.state_dict().items() if not torch.equal(v.cpu(), start[k])]
    assert changed  # the policy was updated
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_grpo_with_the_alphaalign_reward_logs_its_parts(tmp_path):
    tok = toy_tokenizer()
    prompts, labels = toy_prompts(8, seed=1)

    def scorer(ps, completions):  # a stand-in helpfulness model: longer answers score higher
        return [float(len(c.split())) for c in completions]

    fn = AlphaAlignReward(AlphaAlignRewardCfg(), group_size=2, scorer=scorer)
    cfg = GRPOCfg(n_rollouts=2, prompts_per_step=4, max_new_tokens=4, lr=1e-3, kl_coef=0.0)
    results = GRPOAdapter(toy_model(tok), tok, fn, prompts, labels, cfg, steps=2, output_dir=tmp_path).train()
    assert len(results) == 2
    m = results[-1].metrics
    for key in ("reward", "format", "refusal", "time_generation", "time_reward", "time_update"):
        assert key in m
    assert {"refusal_harmful", "refusal_benign", "helpfulness"} & set(m)


def test_grpo_stops_on_a_nan_reward(tmp_path):
    tok = toy_tokenizer()
    prompts, labels = toy_prompts(4)

    def broken(ps, completions, ls):
        return [float("nan")] * len(completions)

    cfg = GRPOCfg(n_rollouts=2, prompts_per_step=2, max_new_tokens=2, kl_coef=0.0)
    with pytest.raises(NonFiniteRewardError, match="nan"):
        GRPOAdapter(toy_model(tok), tok, broken, prompts, labels, cfg, steps=1, output_dir=tmp_path).train()


def test_grpo_needs_two_rollouts():
    with pytest.raises(ValueError):
        GRPOCfg(n_rollouts=1)
