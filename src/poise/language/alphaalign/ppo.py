"""A compact PPO for Hugging Face causal LMs (TRL 1.x no longer ships one), read top to bottom.

One :meth:`PPOTrainer.step` takes a batch of prompts with their labels and

1. samples n completions per prompt with ``model.generate`` (left padding, up to the first EOS);
2. scores each completion with the reward function ``(prompts, completions, labels) -> rewards``;
3. runs the policy, its value head and the frozen reference over the rollouts (no grad): old log-probs,
   values, reference log-probs;
4. builds per-token rewards — a KL penalty ``-kl_coef·(log π − log π_ref)`` on every completion token
   and the score on the last one — and GAE advantages and returns;
5. takes ``ppo_epochs`` passes of minibatch updates with the clipped policy loss and the clipped value
   loss, clipping the gradient norm.

Choices: the value head is a linear layer on the policy's last hidden state (a shared trunk, as TRL's
old ``AutoModelForCausalLMWithValueHead``), zero-initialised; dropout is off (the model stays in eval
mode, as TRL's RL trainers disable it) so old and new log-probs agree; log-probs use the sampling
temperature; the KL estimate is k1 per token; advantages are whitened over the batch's tokens. The
reference is a frozen copy of the model as it is when the trainer is built — build the trainer from the
base model, then ``load_state_dict`` a checkpoint to resume.
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from poise.language.alphaalign.rl import (
    NonFiniteRewardError,
    PhaseFn,
    RewardFn,
    StepTiming,
    as_rewards,
    no_phase,
    timed,
)
from poise.language.models import load_tied, unique_state_dict
from poise.recipes import Section


class PPOConfig(Section):
    """PPO's knobs (paper: n = 8 rollouts, lr 1e-6, < 200 steps)."""

    n_rollouts: int = Field(8, ge=1, description="completions sampled per prompt")
    max_new_tokens: int = Field(64, gt=0)
    temperature: float = Field(1.0, gt=0.0)
    top_k: int = Field(0, ge=0, description="0 = no top-k filtering")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    lr: float = Field(1e-6, gt=0.0, description="used when no optimizer is passed in")
    ppo_epochs: int = Field(1, ge=1, description="passes over each rollout batch")
    minibatch_size: int = Field(16, ge=1, description="rollouts per gradient step")
    clip_range: float = Field(0.2, gt=0.0, description="policy ratio clip ε")
    clip_range_value: float = Field(0.2, gt=0.0, description="value clip around the old values")
    vf_coef: float = Field(0.1, ge=0.0)
    kl_coef: float = Field(0.05, ge=0.0, description="β of the per-token KL penalty to the reference")
    gamma: float = Field(1.0, ge=0.0, le=1.0)
    lam: float = Field(0.95, ge=0.0, le=1.0, description="GAE λ")
    whiten_advantages: bool = True
    max_grad_norm: float | None = Field(1.0, gt=0.0)
    missing_eos_penalty: float | None = Field(
        None, ge=0.0, description="subtracted from the score of completions without EOS"
    )


class ValueHead(nn.Module):
    """A scalar value per position from the policy's last hidden state."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.proj = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.proj(hidden).squeeze(-1)


@dataclass
class Rollouts:
    """One step's sampled batch: prompt + completion tokens and what PPO needs about them."""

    input_ids: torch.Tensor  # (B, P + C)
    attention_mask: torch.Tensor  # (B, P + C)
    completion_mask: torch.Tensor  # (B, C), 1 up to and including the first EOS
    prompt_len: int
    scores: torch.Tensor  # (B,)
    logprobs: torch.Tensor = field(default_factory=lambda: torch.empty(0))  # (B, C) old policy
    ref_logprobs: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    values: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    advantages: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    returns: torch.Tensor = field(default_factory=lambda: torch.empty(0))


@dataclass
class StepResult:
    """What one PPO step did: its metrics (reward parts included) and its timing split."""

    step: int
    metrics: dict[str, float]
    timing: StepTiming
    completions: list[str]
    rewards: list[float]


def completion_mask(completion_ids: torch.Tensor, eos_id: int | list[int] | None) -> torch.Tensor:
    """1 for completion tokens up to and including the first EOS, 0 after it."""
    if eos_id is None:
        return torch.ones_like(completion_ids)
    eos_ids = torch.tensor(eos_id if isinstance(eos_id, list) else [eos_id], device=completion_ids.device)
    is_eos = torch.isin(completion_ids, eos_ids).long()
    after = is_eos.cumsum(1) - is_eos  # number of EOS strictly before each position
    return (after == 0).long()


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-padded token sequences; returns (advantages, returns).

    Positions where ``mask`` is 0 (after the first EOS) have no value and no reward: the episode ends at
    the last unmasked token.
    """
    values = values * mask
    rewards = rewards * mask
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_value = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = delta + gamma * lam * last * (mask[:, t + 1] if t + 1 < T else 0.0)
        last = last * mask[:, t]
        adv[:, t] = last
    return adv, (adv + values) * mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + eps) * mask


class PPOTrainer:
    """PPO for any HF causal LM with a reward function ``(prompts, completions, labels) -> rewards``.

    ``optimizer`` (over ``trainer.parameters()``: policy and value head) and ``scheduler`` (stepped once
    per PPO step) may be passed in, or factories for them — ``lambda params: ctx.optimizer(params)``,
    ``lambda opt: ctx.scheduler(opt, meter)``; by default AdamW at ``cfg.lr`` and no schedule.
    ``state_dict()`` holds the policy, the value head, the optimiser, the scheduler and the step.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer,
        reward_fn: RewardFn,
        cfg: PPOConfig | None = None,
        *,
        ref_model: nn.Module | None = None,
        optimizer: torch.optim.Optimizer
        | Callable[[list[nn.Parameter]], torch.optim.Optimizer]
        | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler
        | Callable[[torch.optim.Optimizer], Any]
        | None = None,
        phase: PhaseFn = no_phase,
    ):
        self.cfg = cfg = cfg or PPOConfig()
        self.phase = phase  # ctx.phase in a run: generation, reward and update are charged to phases
        self.model = model
        self.tokenizer = tokenizer
        self.reward_fn = reward_fn
        self.device = next(model.parameters()).device
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs a pad token (set tokenizer.pad_token)")
        self.ref_model = ref_model if ref_model is not None else copy.deepcopy(model)
        self.ref_model.eval().requires_grad_(False)
        self.value_head = ValueHead(model.config.hidden_size).to(self.device)
        if optimizer is None:
            optimizer = torch.optim.AdamW(self.parameters(), lr=cfg.lr)
        elif not isinstance(optimizer, torch.optim.Optimizer):
            optimizer = optimizer(self.parameters())  # a factory, e.g. ctx.optimizer
        self.optimizer = optimizer
        self.scheduler = (
            scheduler(optimizer) if callable(scheduler) and not hasattr(scheduler, "step") else scheduler
        )
        self.step_count = 0
        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        eos = model.generation_config.eos_token_id if getattr(model, "generation_config", None) else None
        self.eos_id = eos if eos is not None else tokenizer.eos_token_id

    def parameters(self) -> list[nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad] + list(self.value_head.parameters())

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        """Policy (tied weights stored once), value head, optimiser, scheduler and step count."""
        return {
            "model": unique_state_dict(self.model),
            "value_head": self.value_head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "step": self.step_count,
        }

    def load_state_dict(self, state: dict) -> None:
        load_tied(self.model, state["model"])
        self.value_head.load_state_dict(state["value_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"]:
            self.scheduler.load_state_dict(state["scheduler"])
        self.step_count = int(state["step"])

    # ------------------------------------------------------------------ one step

    def step(self, prompts: list[str], labels: list[int]) -> StepResult:
        cfg, n = self.cfg, self.cfg.n_rollouts
        self.model.eval()  # dropout off: old and new log-probs must agree
        timing = StepTiming()

        # 1. rollouts: n completions per prompt, grouped (prompt i's rollouts are rows i*n .. i*n+n-1)
        rep_prompts = [p for p in prompts for _ in range(n)]
        rep_labels = [int(y) for y in labels for _ in range(n)]
        with self.phase("generation"), timed(self.device) as t:
            batch = self._generate(rep_prompts)
            completions = self.tokenizer.batch_decode(
                batch.input_ids[:, batch.prompt_len :] * batch.completion_mask
                + self.tokenizer.pad_token_id * (1 - batch.completion_mask),
                skip_special_tokens=True,
            )
        timing.generation = t[0]

        # 2. rewards (one per completion), checked finite before anything is updated
        with self.phase("reward"), timed(self.device) as t:
            rewards = as_rewards(self.reward_fn(rep_prompts, completions, rep_labels), len(completions))
        timing.reward = t[0]

        # 3-5. log-probs, values, advantages and the PPO update
        with self.phase("update"), timed(self.device) as t:
            scores = torch.tensor(rewards.total, dtype=torch.float32, device=self.device)
            if cfg.missing_eos_penalty is not None:
                scores = scores - cfg.missing_eos_penalty * (~self._has_eos(batch)).float()
            batch.scores = scores
            stats = self._update(batch)
        timing.update = t[0]

        self.step_count += 1
        if self.scheduler is not None:
            self.scheduler.step()
        lengths = batch.completion_mask.sum(1).float()
        metrics = {
            **{k: float(v) for k, v in rewards.metrics.items()},
            "score": float(scores.mean()),
            "completion_length": float(lengths.mean()),
            **stats,
            **timing.as_dict(),
        }
        metrics.setdefault("reward", float(sum(rewards.total) / len(rewards.total)))
        return StepResult(self.step_count, metrics, timing, completions, rewards.total)

    # ------------------------------------------------------------------ pieces

    @torch.no_grad()
    def _generate(self, prompts: list[str]) -> Rollouts:
        tok = self.tokenizer
        side, tok.padding_side = tok.padding_side, "left"
        try:
            enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        finally:
            tok.padding_side = side
        cfg = self.cfg
        out = self.model.generate(
            **enc,
            do_sample=True,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_k=cfg.top_k,
            top_p=cfg.top_p,
            pad_token_id=tok.pad_token_id,
            eos_token_id=self.eos_id,
        )
        P = enc["input_ids"].shape[1]
        cmask = completion_mask(out[:, P:], self.eos_id)
        attention = torch.cat([enc["attention_mask"], cmask], dim=1)
        return Rollouts(out, attention, cmask, P, torch.empty(0))

    def _has_eos(self, batch: Rollouts) -> torch.Tensor:
        completion = batch.input_ids[:, batch.prompt_len :]
        eos = self.eos_id if isinstance(self.eos_id, list) else [self.eos_id]
        return (
            torch.isin(completion, torch.tensor(eos, device=completion.device)) & (batch.completion_mask > 0)
        ).any(1)

    def _forward(
        self, model: nn.Module, batch: Rollouts, rows: torch.Tensor | slice, with_values: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-token log-probs of the completion tokens (and values at the positions that predict them)."""
        ids, attn = batch.input_ids[rows], batch.attention_mask[rows]
        position_ids = (attn.cumsum(1) - 1).clamp(min=0)
        C = ids.shape[1] - batch.prompt_len
        kwargs = {"logits_to_keep": C + 1} if self._keeps_logits else {}
        out = model(
            input_ids=ids,
            attention_mask=attn,
            position_ids=position_ids,
            output_hidden_states=with_values,
            use_cache=False,
            **kwargs,
        )
        logits = out.logits[:, -(C + 1) : -1].float() / self.cfg.temperature
        logprobs = torch.gather(F.log_softmax(logits, dim=-1), 2, ids[:, -C:, None]).squeeze(-1)
        values = None
        if with_values:
            hidden = out.hidden_states[-1][:, -(C + 1) : -1]
            values = self.value_head(hidden.float())
        return logprobs, values

    def _update(self, batch: Rollouts) -> dict[str, float]:
        cfg = self.cfg
        mask = batch.completion_mask.float()
        B = batch.input_ids.shape[0]
        with torch.no_grad():  # in minibatch-sized chunks, so memory scales like the update's
            chunks = [
                torch.arange(i, min(i + cfg.minibatch_size, B), device=self.device)
                for i in range(0, B, cfg.minibatch_size)
            ]
            policy = [self._forward(self.model, batch, rows, with_values=True) for rows in chunks]
            batch.logprobs = torch.cat([lp for lp, _ in policy])
            batch.values = torch.cat([v for _, v in policy if v is not None])
            batch.ref_logprobs = torch.cat(
                [self._forward(self.ref_model, batch, rows, False)[0] for rows in chunks]
            )
            kl = (batch.logprobs - batch.ref_logprobs) * mask
            token_rewards = -cfg.kl_coef * kl
            last = (mask.sum(1).long() - 1).clamp(min=0)
            token_rewards[torch.arange(B), last] += batch.scores
            adv, returns = gae(token_rewards, batch.values, mask, cfg.gamma, cfg.lam)
            batch.advantages = masked_whiten(adv, mask) if cfg.whiten_advantages else adv
            batch.returns = returns

        sums = {"loss_policy": 0.0, "loss_value": 0.0, "clipfrac": 0.0, "approx_kl": 0.0}
        updates = 0
        mb = min(cfg.minibatch_size, B)
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(B, device=self.device)
            for start in range(0, B, mb):
                rows = order[start : start + mb]
                m = mask[rows]
                logprobs, values = self._forward(self.model, batch, rows, with_values=True)
                assert values is not None
                ratio = torch.exp(logprobs - batch.logprobs[rows])
                adv = batch.advantages[rows]
                pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range))
                loss_policy = masked_mean(pg, m)
                old_v = batch.values[rows]
                v_clipped = old_v + (values - old_v).clamp(-cfg.clip_range_value, cfg.clip_range_value)
                ret = batch.returns[rows]
                loss_value = 0.5 * masked_mean(torch.max((values - ret) ** 2, (v_clipped - ret) ** 2), m)
                loss = loss_policy + cfg.vf_coef * loss_value
                if not torch.isfinite(loss):
                    raise NonFiniteRewardError(
                        f"the PPO loss became {float(loss)} at step {self.step_count + 1}; "
                        "training stopped, resume from the last checkpoint",
                        field="loss",
                    )
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(self.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    sums["loss_policy"] += float(loss_policy)
                    sums["loss_value"] += float(loss_value)
                    sums["clipfrac"] += float(masked_mean(((ratio - 1).abs() > cfg.clip_range).float(), m))
                    sums["approx_kl"] += float(masked_mean(0.5 * (logprobs - batch.logprobs[rows]) ** 2, m))
                updates += 1
        stats = {k: v / max(updates, 1) for k, v in sums.items()}
        stats["kl"] = float((kl.sum(1)).mean())  # per-sequence KL to the reference, before the update
        stats["value_mean"] = float(masked_mean(batch.values, mask))
        if not all(math.isfinite(v) for v in stats.values()):
            raise NonFiniteRewardError(
                f"PPO statistics became non-finite at step {self.step_count + 1}: {stats}", field="loss"
            )
        return stats
