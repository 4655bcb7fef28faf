"""``vision.autoattack_ref``: AutoAttack through the reference implementation, with its sanity checks surfaced.

The reference is Croce & Hein's AutoAttack code as published on PyPI as ``pyautoattack`` (0.2.0: the
attack files — APGD, APGD-T, FAB, Square, the checks — are the original repository's, byte for byte
apart from relative imports; the ``AutoAttack`` front class takes keyword arguments and logs through
``logging``). RobustBench 1.1 evaluates its leaderboard with it. Use this evaluator for headline
figures; ``vision.robust_accuracy`` with ``attack = "autoattack"`` assembles the same four attacks from
torchattacks' parts (a cross-check, and the fast path inside training loops).

Defaults are the *standard* version exactly as published (APGD-CE, APGD-T with 9 targets, FAB-T with 9
targets, Square with 5,000 queries, 100 iterations). ``steps``, ``n_targets`` and ``square_queries`` cut
the budget for quick runs; a cut budget is recorded with the checks, and the report says so.

AutoAttack's own checks run inside the evaluation and are collected, never printed by the package:
a randomised model (outputs differ between identical forward passes), probabilities instead of logits,
a dynamic model (gradients taken inside ``forward``), too many target classes, examples with zero
gradient (a gradient-masking hint), and Square — a black-box attack — lowering robust accuracy after the
white-box attacks (another masking hint). They are logged as run messages, stored as the run's
``autoattack_checks`` artifact (JSON, with the accuracy after each attack) and listed in the report.
The package counts the calls seen by its dynamic-model check in module-level counters it never
resets; they are reset before every evaluation so one model's flag does not leak into the next.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from poise.errors import UserError
from poise.evaluators import MetricSpec, evaluator
from poise.vision.attacks import Eps, attack_mode
from poise.vision.data import as_float

STANDARD = {"steps": 100, "n_targets": 9, "square_queries": 5000}
_AFTER = re.compile(r"robust accuracy after ([A-Z-]+): ([0-9.]+)%")
_INITIAL = re.compile(r"^initial accuracy: ([0-9.]+)%")


@dataclass
class ReferenceResult:
    """What one reference AutoAttack evaluation found."""

    robust_acc: float
    clean_acc: float
    after: dict[str, float] = field(default_factory=dict)  # robust accuracy after each attack, in run order
    warnings: list[str] = field(default_factory=list)  # AutoAttack's own check messages, deduplicated
    budget: dict[str, Any] = field(default_factory=dict)
    reduced_budget: bool = False


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def reference_autoattack(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: Literal["linf", "l2", "l1"] = "linf",
    version: Literal["standard", "plus", "rand"] = "standard",
    steps: int | None = None,
    n_targets: int | None = None,
    square_queries: int | None = None,
    seed: int = 0,
    batch_size: int = 250,
    device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, ReferenceResult]:
    """Run the reference AutoAttack on ``x`` (floats in [0, 1]); returns the adversarial inputs and a result."""
    try:
        from pyautoattack import AutoAttack, checks
    except ImportError:
        raise UserError("the reference AutoAttack is not installed; expected `pip install pyautoattack` "
                        "(part of poise[vision])", field="eval") from None
    device = torch.device(device)
    x, y = as_float(x).cpu(), y.cpu()  # the reference moves one batch at a time to ``device``
    adversary = AutoAttack(model, norm={"linf": "Linf", "l2": "L2", "l1": "L1"}[norm], eps=eps, version=version,
                           seed=seed, device=device)
    if steps is not None:
        adversary.apgd.n_iter = adversary.apgd_targeted.n_iter = adversary.fab.n_iter = steps
    if n_targets is not None:
        adversary.apgd_targeted.n_target_classes = adversary.fab.n_target_classes = n_targets
    if square_queries is not None:
        adversary.square.n_queries = square_queries
    for k in checks.funcs:  # the dynamic-model check's counters are module globals the package never resets
        checks.funcs[k] = 0
    logger = logging.getLogger("auto-attack")
    handler = _Collect()
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        with attack_mode(model):
            x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
            with torch.no_grad():  # re-scored as RobustBench does: accuracy on the returned adversarial inputs
                robust = sum((model(x_adv[i : i + batch_size].to(device)).argmax(1).cpu() == y[i : i + batch_size])
                             .sum().item() for i in range(0, len(x), batch_size))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    after: dict[str, float] = {}
    clean = float("nan")
    warnings: list[str] = []
    for r in handler.records:
        msg = r.getMessage()
        if r.levelno >= logging.WARNING:
            if msg not in warnings:
                warnings.append(msg)
        elif m := _AFTER.search(msg):
            after[m.group(1).lower()] = float(m.group(2)) / 100
        elif m := _INITIAL.search(msg):
            clean = float(m.group(1)) / 100
    budget = {
        "version": version,
        "attacks": list(adversary.attacks_to_run),
        "steps": adversary.apgd.n_iter,
        "n_targets": adversary.apgd_targeted.n_target_classes,
        "square_queries": adversary.square.n_queries,
    }
    reduced = version == "standard" and any(budget[k] < v for k, v in STANDARD.items())
    n = max(len(x), 1)
    return x_adv, ReferenceResult(robust / n, clean, after, warnings, budget, reduced)


class AutoAttackRefParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    norm: Literal["linf", "l2", "l1"] | None = Field(None, description="default: the recipe's threat.norm")
    eps: Eps | None = Field(None, description="default: the recipe's threat.eps")
    version: Literal["standard", "plus", "rand"] = Field("standard", description="AutoAttack's version")
    steps: int | None = Field(None, gt=0, le=10_000, description="APGD / FAB iterations (reference: 100)")
    n_targets: int | None = Field(None, gt=0, le=999, description="APGD-T / FAB-T target classes (reference: 9)")
    square_queries: int | None = Field(None, gt=0, le=1_000_000, description="Square's queries (reference: 5000)")
    n: int | None = Field(None, gt=0, description="attack the first n examples only")
    split: Literal["test", "val"] = "test"
    batch_size: int = Field(250, gt=0, le=100_000)
    seed: int = Field(0, ge=0)
    metric: str = Field("autoattack_acc", pattern=r"^[a-z][a-z0-9_]*_acc$", description="name of the headline metric")


@evaluator(
    "vision.autoattack_ref",
    metrics=[MetricSpec("*_acc", "robustness", "max", "accuracy under the reference AutoAttack (per attack: "
                        "aa_<attack>_acc)")],
    params=AutoAttackRefParams,
)
def autoattack_ref_eval(model, data, ctx, *, norm, eps, version, steps, n_targets, square_queries, n, split,
                        batch_size, seed, metric) -> dict[str, float]:
    """Accuracy under the reference AutoAttack (Croce & Hein's code), its sanity checks kept as warnings."""
    threat = getattr(ctx.cfg, "threat", None)
    if threat is None and eps is None:
        raise UserError("this recipe has no [threat]; expected eps in the evaluator entry", field="eval")
    eps = eps if eps is not None else threat.eps
    norm = norm or (threat.norm if threat is not None else "linf")
    x, y = data.split(split)
    x, y = x[:n], y[:n]
    devices = [ctx.device] if ctx.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        _, res = reference_autoattack(model, x, y, eps=eps, norm=norm, version=version, steps=steps,
                                      n_targets=n_targets, square_queries=square_queries, seed=seed,
                                      batch_size=batch_size, device=ctx.device)
    for w in res.warnings:
        ctx.info(f"AutoAttack check: {w}")
    report = {"metric": metric, "eps": eps, "norm": norm, "n": len(x), **asdict(res)}
    ctx.save_file(f"autoattack_checks.{metric}", json.dumps(report, indent=2).encode(), "application/json",
                  meta={"metric": metric, "warnings": len(res.warnings)})
    out = {metric: res.robust_acc}
    prefix = metric.removesuffix("_acc").replace("autoattack", "aa")
    for attack, acc in res.after.items():
        out[f"{prefix}_{attack.replace('-', '_')}_acc"] = acc
    return out


# --------------------------------------------------------------------------- report


def _checks(store: Any, run_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for rid in run_ids:
        for a in store.artifacts(rid):
            if a.name.startswith("autoattack_checks.") and a.media == "application/json":
                try:
                    out.setdefault(rid, []).append(json.loads(a.path.read_text()))
                except (OSError, ValueError):
                    continue
    return out


def _register_report() -> None:
    from poise.report import Block, report_section

    @report_section("vision.autoattack_checks", "Vision: AutoAttack sanity checks")
    def autoattack_checks(store: Any, runs: list[Any]) -> list[Block]:
        """Every reference AutoAttack evaluation: its figure, accuracy after each attack, and its warnings."""
        vision = [r for r in runs if r.kind.startswith("vision.") and r.status == "done"]
        found = _checks(store, [r.id for r in vision])
        rows, flagged = [], 0
        for r in vision:
            for c in found.get(r.id, []):
                flagged += bool(c["warnings"])
                after = ", ".join(f"{k} {v:.3f}" for k, v in c["after"].items())
                budget = c["budget"]
                rows.append([
                    r.name, r.id, c["metric"], f"{c['robust_acc']:.3f}", after,
                    f"{c['norm']} {c['eps']:.4g}, n={c['n']}, {budget['steps']} steps, {budget['n_targets']} "
                    f"targets, {budget['square_queries']} queries" + (" (reduced)" if c["reduced_budget"] else ""),
                    " | ".join(f"WARNING: {w}" for w in c["warnings"]) or "none",
                ])
        if not rows:
            return []
        return [Block(
            "reference AutoAttack: figures and AutoAttack's own checks",
            table=(["run", "id", "metric", "robust acc", "accuracy after each attack", "budget", "warnings"], rows),
            note=f"{flagged} of {len(rows)} evaluations raised warnings. A warning (randomised model, zero "
            "gradients, Square beating the white-box attacks, probabilities for logits, a dynamic model) means "
            "the AutoAttack figure may overstate robustness: check with an adaptive attack. A reduced budget "
            "is not the standard AutoAttack.",
        )]


_register_report()
