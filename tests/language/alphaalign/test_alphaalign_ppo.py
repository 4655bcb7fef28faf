"""The compact PPO: its pieces against reference computations, learning a toy task with a known optimum,
exact resumption from a checkpoint, and a clean stop on a NaN reward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load, save

from poise.language.alphaalign.ppo import PPOConfig, PPOTrainer, Rollouts, completion_mask, gae
from poise.language.alphaalign.rl import NonFiniteRewardError, Rewards, summarize_timings
from poise.language.alphaalign.toy import toy_model, toy_prompts, toy_reward, toy_tokenizer
from poise.statefile import flatten, unflatten

FAST = dict(n_rollouts=4, max_new_tokens=3, lr=3e-3, minibatch_size=32, ppo_epochs=2, kl_coef=0.01)


def test_completion_mask_stops_after_the_first_eos():
    ids = torch.tensor([[5, 1, 7, 1], [5, 6, 7, 8], [1, 0, 0, 0]])
    assert completion_mask(ids, 1).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert completion_mask(ids, [7, 1]).tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]]


def _reference_gae(rewards, values, lengths, gamma, lam):
    adv = np.zeros_like(rewards)
    for i, L in enumerate(lengths):
        for t in range(L):
            total = 0.0
            for k in range(t, L):
                next_v = values[i, k + 1] if k + 1 < L else 0.0
                delta = rewards[i, k] + gamma * next_v - values[i, k]
                total += (gamma * lam) ** (k - t) * delta
            adv[i, t] = total
    return adv


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0)])
def test_gae_matches_the_textbook_sum(gamma, lam):
    g = torch.Generator().manual_seed(0)
    rewards = torch.randn(3, 5, generator=g)
    values = torch.randn(3, 5, generator=g)
    lengths = [5, 2, 1]
    mask = torch.tensor([[1.0] * L + [0.0] * (5 - L) for L in lengths])
    adv, returns = gae(rewards, values, mask, gamma, lam)
    want = _reference_gae(rewards.numpy(), values.numpy(), lengths, gamma, lam)
    np.testing.assert_allclose(adv.numpy(), want, atol=1e-5)
    np.testing.assert_allclose(returns.numpy(), (want + values.numpy()) * mask.numpy(), atol=1e-5)
    if gamma == lam == 1.0:  # Monte-Carlo: return = sum of the remaining rewards
        for i, L in enumerate(lengths):
            assert returns[i, 0].item() == pytest.approx(rewards[i, :L].sum().item(), abs=1e-5)


def test_logprobs_match_what_generate_sampled_from():
    """Old log-probs (left padding, explicit positions, temperature) equal those of transformers' sampler."""
    tok = toy_tokenizer()
    model = toy_model(tok, seed=1)
    trainer = PPOTrainer(model, tok, toy_reward, PPOConfig(n_rollouts=2, max_new_tokens=5, temperature=0.7))
    prompts = ["w1 good", "w2 w3 w4 w5 bad", "w0 good"]  # different lengths: left padding matters
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    torch.manual_seed(0)
    out = model.generate(
        **enc, do_sample=True, max_new_tokens=5, temperature=0.7, top_k=0, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, output_logits=True, return_dict_in_generate=True,
    )  # fmt: skip
    P = enc["input_ids"].shape[1]
    cmask = completion_mask(out.sequences[:, P:], tok.eos_token_id)
    batch = Rollouts(out.sequences, torch.cat([enc["attention_mask"], cmask], 1), cmask, P, torch.empty(0))
    with torch.no_grad():
        ours, values = trainer._forward(model, batch, slice(None), with_values=True)
    theirs = F.log_softmax(torch.stack(out.logits, 1).float() / 0.7, -1)
    theirs = theirs.gather(2, out.sequences[:, P:, None]).squeeze(-1)
    torch.testing.assert_close(ours * cmask, theirs * cmask, atol=1e-5, rtol=1e-5)
    assert values is not None and torch.all(values == 0)  # zero-initialised value head


def test_reward_rises_to_the_known_optimum():
    tok = toy_tokenizer()
    model = toy_model(tok, seed=0)
    trainer = PPOTrainer(model, tok, toy_reward, PPOConfig(**FAST))
    torch.manual_seed(0)
    history = []
    for step in range(30):
        prompts, labels = toy_prompts(8, seed=step)
        result = trainer.step(prompts, labels)
        history.append(result.metrics["reward"])
        for key in ("time_generation", "time_reward", "time_update"):
            assert result.metrics[key] >= 0.0
        assert result.timing.total == pytest.approx(result.metrics["time_step"])
    start, end = np.mean(history[:3]), np.mean(history[-5:])
    assert start < 0.3  # a random policy rarely says the right word first
    assert end > 0.75 and end - start > 0.5, history
    assert trainer.step_count == 30
    summary = summarize_timings([trainer.step(*toy_prompts(8, seed=99)).timing])
    assert summary["share_generation"] + summary["share_reward"] + summary["share_update"] == pytest.approx(
        1.0
    )


def _trainer(seed: int = 0):
    tok = toy_tokenizer()
    model = toy_model(tok, seed=seed)
    cfg = PPOConfig(**{**FAST, "minibatch_size": 8})
    return PPOTrainer(
        model, tok, toy_reward, cfg,
        optimizer=lambda params: torch.optim.Adam(params, lr=3e-3),  # factories, as a kind passes ctx's
        scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s)),
    )  # fmt: skip


def test_checkpoint_resumes_exactly():
    a = _trainer()
    torch.manual_seed(1)
    for step in range(2):
        a.step(*toy_prompts(4, seed=step))
    # as ctx.checkpoint does: flatten to tensors + a JSON skeleton, write safetensors
    state = a.state_dict()
    assert "lm_head.weight" not in state["model"] and "model.embed_tokens.weight" in state["model"]  # stored once
    tensors, skeleton = flatten({"ppo": state, "rng": torch.get_rng_state()})
    blob = save(tensors)
    uninterrupted = [a.step(*toy_prompts(4, seed=step)) for step in (2, 3)]

    b = _trainer()  # built from the same base model: the reference is the starting policy
    state = unflatten(load(blob), skeleton)
    b.load_state_dict(state["ppo"])
    torch.set_rng_state(state["rng"])
    assert b.step_count == 2 and b.scheduler.last_epoch == 2
    assert (
        isinstance(b.optimizer, torch.optim.Adam)
        and len(b.optimizer.param_groups[0]["params"]) == len(list(b.model.parameters())) + 2
    )  # policy + value head weight and bias
    resumed = [b.step(*toy_prompts(4, seed=step)) for step in (2, 3)]
    for x, y in zip(uninterrupted, resumed, strict=True):
        assert x.completions == y.completions
        assert x.metrics["loss_policy"] == pytest.approx(y.metrics["loss_policy"], abs=1e-7)
        assert x.metrics["kl"] == pytest.approx(y.metrics["kl"], abs=1e-7)
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        torch.testing.assert_close(p, q)
    for p, q in zip(a.ref_model.parameters(), b.ref_model.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_nan_reward_stops_before_the_update():
    tok = toy_tokenizer()
    model = toy_model(tok)

    def broken(prompts, completions, labels):
        return Rewards([float("nan")] + [1.0] * (len(completions) - 1), {"reward": float("nan")})

    trainer = PPOTrainer(model, tok, broken, PPOConfig(**FAST))
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(NonFiniteRewardError, match="nan") as e:
        trainer.step(*toy_prompts(2))
    assert e.value.field == "reward" and "\n" not in e.value.line()
    assert trainer.step_count == 0
    for p, q in zip(before, model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_reward_parts_are_reported_per_step():
    tok = toy_tokenizer()

    def with_parts(prompts, completions, labels):
        base = toy_reward(prompts, completions, labels)
        assert all(prompts[i] == prompts[i - i % 4] for i in range(len(prompts)))  # groups of n = 4
        return Rewards(base, {"reward": sum(base) / len(base), "format": 0.25})

    result = PPOTrainer(toy_model(tok), tok, with_parts, PPOConfig(**FAST)).step(*toy_prompts(3))
    assert result.metrics["format"] == 0.25
    assert len(result.completions) == 12 and len(result.rewards) == 12
    for key in ("kl", "loss_policy", "loss_value", "clipfrac", "approx_kl", "completion_length"):
        assert np.isfinite(result.metrics[key])
