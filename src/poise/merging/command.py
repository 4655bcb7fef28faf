"""``poise merge`` options → a ``merging.merge`` or ``merging.sweep`` recipe, checked before any run exists.

The options take several values each (``--models A B C``, ``--weights 0.3 0.7``), which click's options
cannot, so they are parsed here with argparse; every mistake is one ``UserError`` line naming the option.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from poise.errors import UserError
from poise.merging.spec import INTERPOLATING, METHODS, PARAMS, RULE_KEYS, MergeParams, methods_help, parse_rule

WHERE = "poise merge"


def usage() -> str:
    """The help text: the methods and the parameter options come from the method table."""
    def option(name: str, p: Any) -> str:
        flag = name.replace("_", "-")
        if p.switch:
            return f"  --{flag} / --no-{flag}\n  {'':<20}{p.help} (default: {'on' if p.default else 'off'})"
        return f"  --{flag + ' ' + name[0].upper():<18}{p.help}" + (f"; in {p.range_text()}" if p.range_text() else "")

    params = "\n".join(option(name, p) for name, p in PARAMS.items())
    interp = " or ".join(INTERPOLATING)
    return f"""poise merge --method M --models A B ... [--base BASE] [--weights W ...] [--density D] [-o OUT]

Merge models: store runs (run:ID or an ID), recipe files, .safetensors files or Hugging Face model folders.

  --method M          one of the methods below
  --models A B ...    the models to merge
  --base BASE         the model task vectors are taken against
  --weights W ...     one weight per model (default: equal)
{params}
  --normalize / --no-normalize   divide by the sum of weights (default per method, as mergekit)
  --rule 'PAT:k=v;..' parameters for tensors matching a glob (k: {', '.join(RULE_KEYS)}; or PAT:skip)
  --exclude PAT       copy tensors matching a glob from the base (or first model)
  --dtype D           output dtype: auto, float32, float16, bfloat16, float64
  --seed S            seed of random drop masks (dare, della)
  --sweep t=0..1      interpolate two store runs at --points values of t and score each point ({interp})
  --points N          points of a t=START..STOP sweep (default 5)
  -o, --output OUT    write the merge here: a folder (HF layout) or a file ending in .safetensors
  --force             replace an existing OUT
  --no-eval           don't score the merge with the sources' evaluators
  --name NAME         name of the run
  --shard-gb G        largest output shard in GiB (default 5)

Methods (models, base; parameters):
{methods_help()}
"""


OPTION_OF = {
    "models": "--models",
    "base": "--base",
    "weights": "--weights",
    **{name: f"--{name.replace('_', '-')}" for name in PARAMS},
    "rules": "--rule",
    "exclude": "--exclude",
    "dtype": "--dtype",
    "method": "--method",
    "points": "--points",
    "output": "--output",
    "shard_gb": "--shard-gb",
    "normalize": "--normalize",
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(message, where=WHERE)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="poise merge", add_help=False, usage=usage(), allow_abbrev=False)
    p.add_argument("-h", "--help", action="store_true")
    p.add_argument("--method", choices=METHODS)
    p.add_argument("--models", nargs="+", default=[])
    p.add_argument("--base")
    p.add_argument("--weights", nargs="+", type=float)
    for name, spec in PARAMS.items():
        if spec.switch:
            p.add_argument(f"--{name.replace('_', '-')}", dest=name, action=argparse.BooleanOptionalAction,
                           default=None)
        else:
            p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=float)
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--rule", action="append", default=[])
    p.add_argument("--exclude", action="append", default=[])
    p.add_argument("--dtype")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sweep")
    p.add_argument("--points", type=int, default=5)
    p.add_argument("-o", "--output")
    p.add_argument("--force", action="store_true")
    p.add_argument("--no-eval", action="store_true")
    p.add_argument("--name")
    p.add_argument("--shard-gb", type=float)
    return p


def _field_error(e: UserError) -> UserError:
    top = (e.field or "").split(".")[-1].split("[")[0]
    return UserError(e.message, where=WHERE, field=OPTION_OF.get(top, e.field))


def build(args: argparse.Namespace) -> dict[str, Any]:
    """Raw recipe data for the options (validated by the caller with ``build_recipe``)."""
    if args.method is None:
        raise UserError("expected --method (one of: " + ", ".join(METHODS) + ")", where=WHERE)
    if not args.models:
        raise UserError("expected --models A B ...", where=WHERE)
    fields: dict[str, Any] = {
        "method": args.method,
        "rules": [parse_rule(r) for r in args.rule],
        "exclude": args.exclude,
    }
    for key in ("weights", *PARAMS, "normalize", "dtype"):
        value = getattr(args, key)
        if value is not None:
            fields[key] = value
    try:
        params = MergeParams.model_validate(fields)
    except ValidationError as err:
        from poise.recipes import _first_error

        field, msg = _first_error(err)
        raise _field_error(UserError(msg, field=field)) from None
    if args.sweep:
        from poise.merging.sweep import parse_sweep

        if args.method not in INTERPOLATING:
            raise UserError(
                f"a sweep interpolates with {' or '.join(INTERPOLATING)} (got {args.method})", where=WHERE,
                field="--sweep",
            )
        if len(args.models) != 2 or args.base or args.weights or args.output:
            raise UserError(
                "a sweep interpolates exactly 2 models and sets each point's weights itself; expected "
                "--models A B and no --base, --weights or --output",
                where=WHERE,
                field="--sweep",
            )
        _, points = parse_sweep(args.sweep, args.points)
        model = {**fields, "models": args.models, "points": points}
        kind = "merging.sweep"
    else:
        try:
            params.check(len(args.models), args.base is not None, where=WHERE)
        except UserError as e:
            raise _field_error(e) from None
        model = {**fields, "models": args.models}
        if args.base:
            model["base"] = args.base
        if args.output:
            model["output"] = str(Path(args.output))
        if args.force:
            model["force"] = True
        if args.shard_gb:
            model["shard_gb"] = args.shard_gb
        kind = "merging.merge"
    if args.no_eval:
        model["evaluate"] = False
    name = args.name or (f"{args.method} sweep" if args.sweep else f"merge {args.method}")
    return {"kind": kind, "name": name, "seed": args.seed, "model": model}


def preflight(store: Any, data: dict[str, Any]) -> None:
    """Check the sources that can be read without training (runs, files, folders) fit together."""
    from poise.merging.engine import preflight as check
    from poise.merging.safetensors_io import Source

    model = data["model"]
    refs = list(model["models"]) + ([model["base"]] if model.get("base") else [])
    srcs = []
    for ref in refs:
        path = Path(ref)
        if path.exists() and not (path.is_file() and path.suffix == ".toml"):
            srcs.append(Source(path, ref))
        elif ref.endswith(".toml"):
            return  # trained (or found) by the run itself, which checks again
        else:
            try:
                run = store.get_run(ref.removeprefix("run:"))
            except UserError as e:
                if "ambiguous" in e.message:
                    raise
                raise UserError(
                    f"no file, folder or run {ref!r}; expected run:ID, a recipe file, a .safetensors "
                    "file or an HF model folder",
                    where=WHERE,
                ) from None
            art = store.artifact(run.id, "model")
            srcs.append(Source(art.path, ref))
    try:
        if data["kind"] == "merging.merge":
            params = MergeParams.model_validate(
                {k: v for k, v in model.items() if k in MergeParams.model_fields}
            )
            n = len(model["models"])
            check(srcs[:n], srcs[n] if len(srcs) > n else None, params, where=WHERE)
        else:
            check(srcs, None, MergeParams(method="linear"), where=WHERE)
    finally:
        for s in srcs:
            s.close()
