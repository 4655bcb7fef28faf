"""Every numeric field of one recipe per domain, set to finite, infinite, NaN, negative and huge values with
``--set``: one line and exit code 2, or a recipe that runs to finite metrics — never exit 1, never a NaN
"done". The default suite checks validation for every case and runs the valid extreme cases of the vision
recipe; ``make test-all`` runs the valid extreme cases of every domain."""

from __future__ import annotations

import json
import math
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from poise.errors import UserError
from poise.recipes import Section, _unwrap, load_recipe
from poise.registry import get_kind

from ..conftest import RECIPES

DOMAIN_RECIPES = {
    "vision": RECIPES / "vision" / "erm-digits.toml",
    "restoration": RECIPES / "restoration" / "sr-clean.toml",
    "control": RECIPES / "control" / "lipschitz-bc-linear.toml",
    "language": RECIPES / "language" / "sft.toml",
    "merging": RECIPES / "merging" / "digits-sweep.toml",
}
VALUES = ["nan", "inf", "-inf", "-1", "0", "1e300", str(2**60), "0.5"]
# fields whose valid extremes cannot be run to the end in a test (they set how long a run takes)
LONG = ("budget", "epochs", "steps", "points", "alphas", "episodes", "timesteps")


def numeric_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of the int and float fields of a recipe class (nested tables included)."""
    out = []
    for name, f in model.model_fields.items():
        ann = _unwrap(f.annotation)
        path = f"{prefix}{name}"
        if isinstance(ann, type) and issubclass(ann, Section):
            out += numeric_fields(ann, f"{path}.")
        elif ann in (int, float) or (typing.get_origin(ann) is typing.Union
                                     and any(a in (int, float) for a in typing.get_args(ann))):
            out.append(path)
    return out


def cases(domain: str) -> list[tuple[str, str]]:
    cfg = load_recipe(DOMAIN_RECIPES[domain], quick=True)
    return [(f, v) for f in numeric_fields(get_kind(cfg.kind).config) for v in VALUES]


def check_validation(domain: str, field: str, value: str) -> str:
    """``"refused"`` (one line naming the field), ``"valid"``, or a description of how the bar was missed."""
    try:
        cfg = load_recipe(DOMAIN_RECIPES[domain], {field: value}, quick=True)
        cfg.preflight()
    except UserError as e:
        line = e.line()
        named = e.field or ""  # the field, or the table a cross-field check is about ("loss", "data")
        if "\n" in line or not named or not (field == named or field.startswith(named + ".")):
            return f"missed: {line!r} does not name {field}"
        return "refused"
    except Exception as e:  # noqa: BLE001 - exactly what the bar forbids
        return f"missed: {type(e).__name__}: {e}"
    for part in json.dumps(cfg.resolved()).split(","):
        if "NaN" in part or "Infinity" in part:  # a valid number must be a finite one
            return f"missed: accepted a non-finite value into {part!r}"
    return "valid"


@pytest.mark.parametrize("domain", sorted(DOMAIN_RECIPES))
def test_every_numeric_field_is_checked_before_anything_runs(domain):
    results = {(f, v): check_validation(domain, f, v) for f, v in cases(domain)}
    missed = {k: r for k, r in results.items() if r.startswith("missed")}
    assert not missed, missed
    refused = {k for k, r in results.items() if r == "refused"}
    # non-finite values are always refused
    assert all((f, v) in refused for f, v in results if v in ("nan", "inf", "-inf"))
    print(f"{domain}: {len(results)} cases, {len(refused)} refused, {len(results) - len(refused)} valid, "
          f"{len(missed)} missed the bar")


def _run_valid_extremes(cli, domain: str, budget: list[str]) -> tuple[int, int]:
    tried = met = 0
    for field, value in cases(domain):
        if value not in ("1e300", str(2**60), "-1", "0"):
            continue
        if any(word in field for word in LONG) or check_validation(domain, field, value) != "valid":
            continue
        tried += 1
        code, out, err = cli("--json", "run", DOMAIN_RECIPES[domain], "--quick", "--set", f"{field}={value}",
                             *budget)
        if code == 2 and len(err.strip().splitlines()) == 1:
            met += 1
            continue
        assert code == 0, (field, value, code, err)
        metrics = json.loads(out)["metrics"]
        assert all(not (isinstance(v, float) and math.isnan(v)) for v in metrics.values()), (field, value, metrics)
        met += 1
    return tried, met


def test_valid_extreme_values_run_to_finite_metrics_or_stop_with_one_line(cli):
    tried, met = _run_valid_extremes(cli, "vision", ["--set", "train.budget={steps = 3}", "--set", "model.width=4"])
    print(f"vision: {tried} valid extreme cases run, {met} met the bar")
    assert tried > 3 and met == tried


@pytest.mark.slow
@pytest.mark.parametrize(("domain", "budget"), [
    ("restoration", ["--set", "train.budget={steps = 3}"]),
    ("control", ["--set", "train.budget={steps = 3}"]),
    ("language", ["--set", "train.budget={steps = 2}"]),
])
def test_valid_extreme_values_of_every_domain(cli, domain, budget):
    tried, met = _run_valid_extremes(cli, domain, budget)
    print(f"{domain}: {tried} valid extreme cases run, {met} met the bar")
    assert met == tried


def test_the_field_walker_finds_nested_numbers():
    fields = numeric_fields(get_kind("vision.erm").config)
    assert {"seed", "train.lr", "train.budget.epochs", "train.schedule.phi", "threat.eps"} <= set(fields)
    assert Path(DOMAIN_RECIPES["vision"]).is_file()
