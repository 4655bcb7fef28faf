"""Evaluators of Lipschitz feedback policies: nominal cost and regret, cost under attack, certificates.

Closed-loop costs are totals over one episode, averaged over the evaluation initial states (the same
states for every policy of a system; a tuning run's are drawn apart, see ``bc.eval_states``). Regret is
J(π) − J(expert) on those states; degradation at ε is J(π under the strongest of the listed attacks) − J(π),
both averaged over episodes; it is floored at 0 (an attack that happens to lower the cost counts as no
degradation).
"""

from __future__ import annotations

from typing import Annotated

import torch
from pydantic import BaseModel, ConfigDict, Field

from poise.control.lipschitz.certificates import certify, float64_copy, network_layers, product_bound
from poise.control.lipschitz.measurement_attacks import AttackName, MeasurementAttack, rollout
from poise.evaluators import MetricSpec, NoParams, evaluator


def eps_key(eps: float) -> str:
    """Metric-name suffix of an ε value (``0.05`` → ``eps0.05``)."""
    return f"eps{eps:g}"


@evaluator(
    "control.lipschitz_nominal",
    params=NoParams,
    metrics=[
        MetricSpec("nominal_cost", "utility", "min", "closed-loop cost of the policy without attack"),
        MetricSpec("expert_cost", "utility", "min", "closed-loop cost of the expert from the same states"),
        MetricSpec("regret", "utility", "min", "J(policy) − J(expert), mean over evaluation episodes"),
        MetricSpec("train_error", "train", "min", "mean squared action error on the demonstrations"),
    ],
)
def nominal(policy, data, ctx) -> dict[str, float]:
    """Nominal closed-loop cost, the expert's, the regret and the training error."""
    f = float64_copy(policy)
    with torch.no_grad():
        err = (f(data.demos.obs) - data.demos.act).square().sum(-1).mean().item()
    j_pi = rollout(data.system, f, data.x0).costs
    j_ex = rollout(data.system, data.expert, data.x0).costs
    return {
        "nominal_cost": j_pi.mean().item(),
        "expert_cost": j_ex.mean().item(),
        "regret": (j_pi - j_ex).mean().item(),
        "train_error": err,
    }


class AttackParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    eps: list[Annotated[float, Field(ge=0.0)]] = Field(default_factory=lambda: [0.05, 0.1], min_length=1)
    attacks: list[AttackName] = Field(
        default_factory=lambda: ["random", "pgd_action", "pgd_cost"], min_length=1
    )
    pgd_steps: int = Field(10, gt=0)
    lookahead: int = Field(5, gt=0, description="pgd_cost: planning horizon H")
    episodes: int | None = Field(
        None, gt=0, description="use only the first episodes of the evaluation states"
    )


@evaluator(
    "control.lipschitz_attacks",
    params=AttackParams,
    metrics=[
        MetricSpec(
            "attacked_cost_eps*", "robustness", "min", "closed-loop cost under the strongest attack at ε"
        ),
        MetricSpec("degradation_eps*", "robustness", "min", "attacked minus nominal cost at ε"),
        MetricSpec(
            "max_deviation_eps*", "robustness", "min", "largest per-step ‖π(x+δ) − π(x)‖ measured at ε"
        ),
        MetricSpec("worst_degradation", "robustness", "min", "degradation at the largest ε"),
        MetricSpec(
            "bound_ratio", "robustness", "min", "max measured deviation / (certified lip · ε); ≤ 1 always"
        ),
    ],
)
def attacked(
    policy,
    data,
    ctx,
    *,
    eps: list[float],
    attacks: list[str],
    pgd_steps: int,
    lookahead: int,
    episodes: int | None,
) -> dict[str, float]:
    """Cost under random and PGD measurement attacks for every ε, and the check against the certificate."""
    f = float64_copy(policy)
    x0 = data.x0[:episodes] if episodes else data.x0
    nominal_cost = rollout(data.system, f, x0).costs.mean().item()
    lip = product_bound(network_layers(f)[0])
    out: dict[str, float] = {}
    ratio = 0.0
    for e in sorted(set(eps)):
        worst, dev = nominal_cost, 0.0
        for i, name in enumerate(attacks):
            atk = MeasurementAttack(name, e, steps=pgd_steps, horizon=lookahead, seed=ctx.seed * 31 + i)
            ro = rollout(data.system, f, x0, attack=atk)
            worst = max(worst, ro.costs.mean().item())
            dev = max(dev, ro.deviation.max().item())
        k = eps_key(e)
        out[f"attacked_cost_{k}"], out[f"degradation_{k}"] = worst, worst - nominal_cost
        out[f"max_deviation_{k}"] = dev
        if e > 0:
            ratio = max(ratio, dev / (lip * e))
    out["worst_degradation"] = out[f"degradation_{eps_key(max(eps))}"]
    out["bound_ratio"] = ratio
    return out


class CertificateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lipsdp: bool = Field(True, description="also solve LipSDP-Neuron (ReLU/tanh policies only)")
    lipsdp_max_neurons: int = Field(64, gt=0, description="skip LipSDP above this many hidden units")
    states: int = Field(1024, gt=0, description="demonstration states probed for the lower bounds")
    pairs: int = Field(2048, gt=0)
    eps: float = Field(0.1, ge=0.0, description="ε of the certified action bound lip·ε")


@evaluator(
    "control.lipschitz_certificate",
    params=CertificateParams,
    metrics=[
        MetricSpec("lip_upper", "robustness", "min", "certified upper bound on lip(π) (ℓ2)"),
        MetricSpec("lip_product", "robustness", "min", "product of exact layer spectral norms"),
        MetricSpec("lip_lipsdp", "robustness", "min", "LipSDP-Neuron bound (verified)"),
        MetricSpec("lip_lower", "robustness", "min", "empirical lower bound on lip(π)"),
        MetricSpec("action_bound", "robustness", "min", "certified action change lip_upper · ε"),
    ],
)
def certificate(
    policy, data, ctx, *, lipsdp: bool, lipsdp_max_neurons: int, states: int, pairs: int, eps: float
) -> dict[str, float]:
    """Certified upper bounds (product, LipSDP) and empirical lower bounds (Jacobian, pairs) of lip(π)."""
    obs = data.demos.obs
    pick = torch.randperm(len(obs), generator=torch.Generator().manual_seed(ctx.seed))[:states]
    weights, _ = network_layers(float64_copy(policy))
    small = sum(w.shape[0] for w in weights[:-1]) <= lipsdp_max_neurons
    c = certify(policy, obs[pick], lipsdp=lipsdp and small, pairs=pairs, seed=ctx.seed)
    out = {
        "lip_upper": c.upper,
        "lip_product": c.product,
        "lip_lower": c.lower,
        "action_bound": c.upper * eps,
    }
    if c.lipsdp is not None:
        out["lip_lipsdp"] = c.lipsdp
    return out
