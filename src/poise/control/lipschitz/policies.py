"""Feedback policies: an unconstrained MLP (the behaviour-cloning baseline) and π = α·g with g 1-Lipschitz.

g chains linear layers whose weights are divided by their spectral norm (``torch.nn.utils.
parametrizations.spectral_norm``, power iteration — or ``norm = "exact"``, the largest singular value
from an SVD each forward) with 1-Lipschitz activations, so lip(g) ≤ 1 in ℓ2 and lip(π) ≤ α. GroupSort
(MaxMin on pairs, Anil et al. 2019) is the default activation: unlike ReLU it keeps the gradient norm,
so a norm-constrained network can still represent steep maps (a spectrally normalised ReLU network
loses a factor 2 on a linear map). Power iteration underestimates ‖W‖₂ a little while it converges, so
the certificates (:mod:`~poise.control.lipschitz.certificates`) always recompute the exact norms of
the weights the policy really uses; :func:`settle` runs extra power iterations after training.

No input normalisation: the policy reads raw measurements, so its Lipschitz constant is the one that
bounds the action change caused by a measurement error.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from poise.recipes import ModelCfg

Activation = Literal["groupsort", "relu", "tanh"]


class PolicyCfg(ModelCfg):
    """The policy: ``constraint`` none (plain MLP), spectral (π = α·g) or laplacian (primal-dual)."""

    name: str = "mlp"
    constraint: Literal["none", "spectral", "laplacian"] = "spectral"
    alpha: float | None = Field(
        None, gt=0.0, description="Lipschitz bound α of the policy (spectral, laplacian)"
    )
    hidden: list[int] = Field(default_factory=lambda: [64, 64], min_length=1)
    activation: Activation = "groupsort"
    norm: Literal["power", "exact"] = Field(
        "power", description="spectral: power iteration (torch) or exact SVD"
    )
    power_iterations: int = Field(1, gt=0, description="power iterations per training forward")
    # laplacian (primal-dual Laplacian smoothing on a k-nearest-neighbour graph of the demonstrations)
    graph_points: int = Field(512, gt=1, description="laplacian: demonstration states in the graph")
    graph_k: int = Field(8, gt=0, description="laplacian: neighbours per state")
    dual_lr: float = Field(0.05, gt=0.0, description="laplacian: dual ascent step")

    @model_validator(mode="after")
    def _check(self) -> PolicyCfg:
        if self.constraint != "none" and self.alpha is None:
            raise ValueError(f"a {self.constraint} policy needs model.alpha > 0 (its Lipschitz bound)")
        if any(h <= 0 for h in self.hidden):
            raise ValueError("hidden widths must be positive")
        if self.activation == "groupsort" and any(h % 2 for h in self.hidden):
            raise ValueError("groupsort sorts pairs of units; expected even hidden widths")
        return self


class GroupSort(nn.Module):
    """Sorts each group of ``group`` consecutive units (2 = MaxMin): 1-Lipschitz, gradient-norm preserving."""

    def __init__(self, group: int = 2):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        return x.reshape(*shape[:-1], shape[-1] // self.group, self.group).sort(dim=-1).values.reshape(shape)


def make_activation(name: str) -> nn.Module:
    return {"groupsort": GroupSort, "relu": nn.ReLU, "tanh": nn.Tanh}[name]()


class ExactSpectralNorm(nn.Module):
    """Parametrization W ↦ W / ‖W‖₂ with the exact largest singular value (differentiable through the SVD)."""

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight / torch.linalg.matrix_norm(weight, ord=2).clamp_min(1e-12)


class PolicyNet(nn.Module):
    """x ↦ scale · (W_L σ(… σ(W_1 x + b_1) …) + b_L); ``scale`` = α for constrained policies, else 1."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: PolicyCfg):
        super().__init__()
        dims = [obs_dim, *cfg.hidden, act_dim]
        self.activation_name = cfg.activation
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
        self.act = make_activation(cfg.activation)
        self.constrained = cfg.constraint == "spectral"
        if self.constrained:
            for layer in self.layers:
                if cfg.norm == "exact":
                    parametrize.register_parametrization(layer, "weight", ExactSpectralNorm())
                else:
                    spectral_norm(layer, n_power_iterations=cfg.power_iterations)
        self.register_buffer("scale", torch.tensor(float(cfg.alpha) if self.constrained else 1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for layer in self.layers[:-1]:
            h = self.act(layer(h))
        return self.scale * self.layers[-1](h)

    def weights(self) -> list[torch.Tensor]:
        """The weight matrices the forward pass uses (normalised), input to output; scale not included."""
        return [layer.weight for layer in self.layers]


@torch.no_grad()
def settle(policy: PolicyNet, iterations: int = 100) -> None:
    """Converge the power iterations of spectral-norm layers (training-mode forwards; weights unchanged)."""
    if not policy.constrained:
        return
    was_training = policy.training
    policy.train()
    dim = policy.layers[0].in_features
    probe = torch.zeros(1, dim, dtype=policy.scale.dtype, device=policy.scale.device)
    for _ in range(iterations):
        policy(probe)
    policy.train(was_training)


def build_policy(cfg: PolicyCfg, obs_dim: int, act_dim: int) -> PolicyNet:
    return PolicyNet(obs_dim, act_dim, cfg)
