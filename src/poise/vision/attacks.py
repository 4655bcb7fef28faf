"""Adversarial attacks with one API: ``Attack(...)(model, x, y, objective=None) -> x_adv``, in [0, 1].

Trainers and evaluators build and call attacks the same way. A trainer builds its attack from the
recipe's ``[threat]`` and ``[train.attack]`` sections with ``cfg.train_attack()`` (or
``Attack.from_recipe(cfg)``) and calls ``attack(model, x, y)``; a trainer whose attack maximises
something other than cross-entropy against the labels passes it as ``objective`` (TRADES' KL to the
model's clean prediction, RSLAD's KL to the teacher's soft labels). Evaluators build theirs from the
evaluator entry plus ``[threat]``.

* ``fgsm`` — one signed-gradient step of size eps (L2: one step of length eps along the gradient).
* ``pgd`` — projected gradient ascent on cross-entropy (Madry et al.), batched, L∞ or L2, random
  start, restarts; the loss can be any per-example function of the logits (TRADES, RSLAD use KL).
* ``cw`` — "CW∞": the same PGD on the CW margin loss (not the L2 C&W optimiser).
* ``autoattack`` — AutoAttack *standard* (APGD-CE, APGD-T, FAB-T, Square) built from torchattacks'
  parts, with the original paper's budget by default (100 iterations, 9 target classes, 5,000 Square
  queries; torchattacks' own ``AutoAttack`` uses 10 iterations) and each part's budget adjustable.

Speed: our PGD runs the model in eval mode with gradients off for every parameter, asks
``torch.autograd.grad`` for the gradient of the perturbation only, and updates the perturbation in
place, so a step costs one forward and one input-only backward (no weight gradients). Restarts only
re-attack the examples no earlier restart has fooled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Annotated, Any, Literal

import torch
import torch.nn.functional as F
from pydantic import BeforeValidator, Field

from poise.recipes import Section
from poise.vision.losses import cw_margin_loss, soft_kl

Norm = Literal["linf", "l2"]
Start = Literal["uniform", "gaussian", "none"]
ATTACKS = ("fgsm", "pgd", "cw", "autoattack")
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, y) -> per-example loss to maximise


def parse_fraction(v: Any) -> Any:
    """Accept ``"8/255"`` as well as numbers for eps and step sizes."""
    if isinstance(v, str):
        try:
            return float(Fraction(v.strip()))
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"expected a number or a fraction such as 8/255 (got {v!r})") from None
    return v


Eps = Annotated[float, BeforeValidator(parse_fraction), Field(ge=0.0, le=1.0)]
StepSize = Annotated[float, BeforeValidator(parse_fraction), Field(gt=0.0, le=1.0)]


class ThreatCfg(Section):
    """The threat model a recipe defends against and is evaluated under: a norm ball of radius eps in
    pixel space ([0, 1]). ``eps`` takes numbers or fractions (``"8/255"``)."""

    norm: Norm = "linf"
    eps: Eps = 8 / 255


class TrainAttackCfg(Section):
    """The attack a defence trains against (its eps and norm come from ``[threat]``)."""

    steps: int = Field(10, ge=1)
    step_size: StepSize | None = Field(
        None, description="default 2.5·eps/steps (eps/4 at 10 steps: 2/255 at 8/255)"
    )
    start: Start = Field(
        "uniform", description="uniform in the eps ball (Madry), or x + 0.001·N(0, 1) (TRADES, RSLAD, MTARD)"
    )

    def build(self, threat: ThreatCfg) -> Attack:
        """The PGD attack this section and the recipe's threat model describe."""
        return Attack("pgd", eps=threat.eps, norm=threat.norm, steps=self.steps, step_size=self.step_size,
                      start=self.start)


class GaussianStartAttackCfg(TrainAttackCfg):
    """The training attack of TRADES, RSLAD and MTARD: from x + 0.001·N(0, 1) as in the authors' code (a
    default of the section's class, so a recipe's partial ``[train.attack]`` table keeps it)."""

    start: Start = Field("gaussian", description="x + 0.001·N(0, 1) (the authors' code), uniform, or none")


def default_step_size(eps: float, steps: int) -> float:
    """Madry et al.'s rule 2.5·eps/steps (one step: eps)."""
    return eps if steps == 1 else 2.5 * eps / steps


@contextmanager
def attack_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and no parameter gradients while attacking; both restored afterwards."""
    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)


def _lp_norm(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (t.dim() - 1)))


def _init_delta(x: torch.Tensor, eps: float, norm: Norm, start: str) -> torch.Tensor:
    if start == "none" or eps == 0:
        delta = torch.zeros_like(x)
    elif start == "gaussian":
        delta = 0.001 * torch.randn_like(x)
    elif norm == "linf":
        delta = torch.empty_like(x).uniform_(-eps, eps)
    else:  # uniform radius along a Gaussian direction (as torchattacks' PGDL2)
        d = torch.randn_like(x)
        r = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device, dtype=x.dtype)
        delta = d / _lp_norm(d) * r * eps
    return _project(x, delta, eps, norm)


def _project(x: torch.Tensor, delta: torch.Tensor, eps: float, norm: Norm) -> torch.Tensor:
    """Into the eps ball, then into the image box: ``clamp(x + δ, 0, 1) − x`` (in place)."""
    if norm == "linf":
        delta.clamp_(-eps, eps)
    else:
        delta.mul_((eps / _lp_norm(delta)).clamp_(max=1.0))
    return delta.add_(x).clamp_(0.0, 1.0).sub_(x)


def ce_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def kl_to(target_probs: torch.Tensor) -> LossFn:
    """The objective ``KL(target ‖ softmax(logits))`` per example, labels unused: TRADES' attack (target:
    the model's own clean prediction) and RSLAD's (target: the teacher's clean soft labels)."""
    return lambda logits, _y: soft_kl(target_probs, logits, "none")


def pgd(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: Norm = "linf",
    steps: int = 10,
    step_size: float | None = None,
    start: str = "uniform",
    restarts: int = 1,
    loss: str | LossFn = "ce",
) -> torch.Tensor:
    """Projected gradient ascent of a per-example ``loss`` in the eps ball around ``x`` (clamped to [0, 1]).

    ``loss`` is ``"ce"``, ``"cw"`` or ``fn(logits, y) -> per-example loss``. With ``restarts > 1`` each
    later restart attacks only the examples that are still classified correctly.
    """
    loss_fn: LossFn = {"ce": ce_loss, "cw": cw_margin_loss}[loss] if isinstance(loss, str) else loss
    alpha = step_size if step_size is not None else default_step_size(eps, steps)
    x = x.detach()
    with attack_mode(model):
        x_adv = _pgd_once(model, x, y, eps, norm, steps, alpha, start, loss_fn)
        for _ in range(restarts - 1):
            with torch.no_grad():
                alive = (model(x_adv).argmax(1) == y).nonzero().squeeze(1)
            if len(alive) == 0:
                break
            x_new = _pgd_once(model, x[alive], y[alive], eps, norm, steps, alpha, start, loss_fn)
            with torch.no_grad():
                fooled = model(x_new).argmax(1) != y[alive]
            x_adv[alive[fooled]] = x_new[fooled]
    return x_adv


def _pgd_once(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    norm: Norm,
    steps: int,
    alpha: float,
    start: str,
    loss_fn: LossFn,
) -> torch.Tensor:
    delta = _init_delta(x, eps, norm, start)
    if norm == "linf":  # one clamp against precomputed bounds per step instead of two clamps
        lo, hi = (x - eps).clamp_(min=0.0), (x + eps).clamp_(max=1.0)
        x_adv = x + delta
        for _ in range(steps):
            delta = x_adv - x  # the leaf the gradient is taken for; x + δ is the model's input
            delta.requires_grad_(True)
            loss = loss_fn(model(x + delta), y).sum()
            (grad,) = torch.autograd.grad(loss, delta)
            x_adv = torch.max(torch.min(x_adv.add_(grad.sign_(), alpha=alpha), hi), lo)
        return x_adv
    for _ in range(steps):
        delta.requires_grad_(True)
        loss = loss_fn(model(x + delta), y).sum()
        (grad,) = torch.autograd.grad(loss, delta)
        delta = delta.detach()
        if norm == "linf":
            delta.add_(grad.sign_(), alpha=alpha)
        else:
            delta.add_(grad.div_(_lp_norm(grad)), alpha=alpha)
        _project(x, delta, eps, norm)
    return (x + delta).detach()


def autoattack(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: Norm = "linf",
    steps: int = 100,
    n_targets: int | None = None,
    square_queries: int = 5000,
    restarts: int = 1,
    seed: int = 0,
    num_classes: int | None = None,
) -> torch.Tensor:
    """AutoAttack standard through torchattacks: APGD-CE, APGD-T, FAB-T, Square, each on the examples the
    previous parts did not fool. ``steps`` is APGD's / FAB's iteration count, ``n_targets`` the target
    classes of APGD-T and FAB-T (default all other classes, at most 9 as in the original)."""
    import torchattacks

    if num_classes is None:
        with torch.no_grad():
            num_classes = int(model(x[:1]).shape[1])
    targets = min(n_targets or 9, num_classes - 1)
    tnorm = "Linf" if norm == "linf" else "L2"
    parts = [
        torchattacks.APGD(model, norm=tnorm, eps=eps, steps=steps, n_restarts=restarts, seed=seed, loss="ce"),
        torchattacks.APGDT(
            model, norm=tnorm, eps=eps, steps=steps, n_restarts=restarts, seed=seed, n_classes=num_classes
        ),
        torchattacks.FAB(
            model,
            norm=tnorm,
            eps=eps,
            steps=steps,
            n_restarts=restarts,
            seed=seed,
            multi_targeted=True,
            n_classes=num_classes,
        ),
        torchattacks.Square(
            model, norm=tnorm, eps=eps, n_queries=square_queries, n_restarts=restarts, seed=seed
        ),
    ]
    parts[1].n_target_classes = targets
    parts[2].n_target_classes = targets
    with attack_mode(model):
        return torchattacks.MultiAttack(parts)(x.detach(), y).detach()


@dataclass(frozen=True)
class Attack:
    """One attack, configured once and applied as ``attack(model, x, y, objective=None) -> x_adv``.

    ``objective`` is the per-example loss ``fn(logits, y)`` the attack maximises; by default
    cross-entropy against ``y`` (``cw``: the CW margin loss). AutoAttack takes no objective.
    """

    name: str = "pgd"
    eps: float = 8 / 255
    norm: Norm = "linf"
    steps: int | None = None  # default: fgsm 1, pgd/cw 20, autoattack 100
    step_size: float | None = None  # default 2.5·eps/steps (fgsm: eps)
    start: Start | None = None  # default: uniform for pgd and cw, none for fgsm
    restarts: int = 1
    n_targets: int | None = None  # autoattack: target classes of APGD-T and FAB-T
    square_queries: int = 5000  # autoattack: Square's query budget
    seed: int = 0  # autoattack's seed

    def __post_init__(self) -> None:
        if self.name not in ATTACKS:
            raise ValueError(f"unknown attack {self.name!r}; expected one of: {', '.join(ATTACKS)}")
        if not 0.0 <= self.eps <= 1.0:
            raise ValueError(f"eps must lie in [0, 1] (got {self.eps})")
        if self.start is not None and self.start not in ("uniform", "gaussian", "none"):
            raise ValueError(f"unknown start {self.start!r}; expected uniform, gaussian or none")

    @classmethod
    def from_recipe(cls, cfg: Any) -> Attack:
        """The training attack of a recipe: ``[train.attack]`` in the eps ball of ``[threat]``."""
        return cfg.train.attack.build(cfg.threat)

    @property
    def n_steps(self) -> int:
        if self.steps is not None:
            return self.steps
        return {"fgsm": 1, "pgd": 20, "cw": 20, "autoattack": 100}[self.name]

    @property
    def label(self) -> str:
        """Metric-style name: ``fgsm``, ``pgd20``, ``cw20``, ``autoattack``."""
        return {"fgsm": "fgsm", "autoattack": "autoattack"}.get(self.name, f"{self.name}{self.n_steps}")

    def __call__(
        self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, objective: LossFn | None = None
    ) -> torch.Tensor:
        if self.name == "autoattack":
            if objective is not None:
                raise ValueError("autoattack runs its own losses; it takes no objective")
            return autoattack(
                model,
                x,
                y,
                eps=self.eps,
                norm=self.norm,
                steps=self.n_steps,
                n_targets=self.n_targets,
                square_queries=self.square_queries,
                restarts=self.restarts,
                seed=self.seed,
            )
        start = self.start if self.start is not None else ("none" if self.name == "fgsm" else "uniform")
        return pgd(
            model,
            x,
            y,
            eps=self.eps,
            norm=self.norm,
            steps=self.n_steps,
            step_size=self.step_size,
            start=start,
            restarts=self.restarts,
            loss=objective if objective is not None else ("cw" if self.name == "cw" else "ce"),
        )
