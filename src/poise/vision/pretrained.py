"""``vision.robustbench``: a RobustBench model as a baseline run — loaded from a local checkpoint, scored by
the recipe's evaluators, stored like any trained classifier (so it is a frontier point, a teacher by
``run:<id>``, a merge input) and written in RobustBench's model-info JSON format.

Nothing is trained: the run's cost is the evaluation's. The JSON is stored as the run's ``robustbench``
artifact and, when ``output.model_info`` names a folder, also written to
``<folder>/<dataset>/<threat_model>/<model_name>.json`` (RobustBench's ``model_info`` layout). Its
``autoattack_acc`` is the run's ``robustness.autoattack_acc`` (use ``vision.autoattack_ref`` for the
reference implementation's figure), ``corruptions_acc`` is ``robustness.corruption_acc``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from pydantic import Field, field_validator

from poise.context import RunContext
from poise.errors import UserError
from poise.recipes import ModelCfg, Section, kind
from poise.vision.base import VisionRecipe, load_data
from poise.vision.robustbench_zoo import (
    check_fits,
    classifier_meta,
    load_classifier,
    model_info,
    model_info_path,
    parse_ref,
)


class RobustBenchModelCfg(ModelCfg):
    """Which RobustBench model: a ``robustbench:<dataset>/<threat_model>/<model_name>`` ref."""

    name: str = "robustbench"
    ref: str = Field(..., description="robustbench:<dataset>/<threat_model>/<model_name>[?root=DIR&arch=...]")

    @field_validator("ref")
    @classmethod
    def _parses(cls, v: str) -> str:
        try:
            parse_ref(v)
        except UserError as e:
            raise ValueError(e.message) from None
        return v


class OutputCfg(Section):
    """Where results go besides the store."""

    model_info: Path | None = Field(None, description="folder of RobustBench model_info JSON files to write into")
    link: str | None = Field(None, description="model_info 'link': the paper or code of the model")
    venue: str | None = Field(None, description="model_info 'venue'")
    authors: str | None = Field(None, description="model_info 'authors'")
    title: str | None = Field(None, description="model_info 'name': the paper's title")
    additional_data: bool = Field(False, description="model_info 'additional_data'")


def rebuild(cfg: Any, tensors: dict, device: Any, meta: dict | None = None) -> tuple[Any, Any]:
    """A stored RobustBench classifier with other weights (a merge), and the data its evaluators read."""
    from poise.vision.data import load_vision_data
    from poise.vision.robustbench_zoo import classifier_from_meta

    data = load_vision_data(cfg.data, cfg.seed)
    if meta is None or "robustbench" not in meta:
        meta = classifier_meta(parse_ref(cfg.model.ref))
    model = classifier_from_meta(meta)
    model.load_state_dict(tensors)
    return model.to(device).eval(), data


class RobustBenchRecipe(VisionRecipe):
    model: RobustBenchModelCfg
    output: OutputCfg = Field(default_factory=OutputCfg)

    # the stored classifier is a RobustBench network, rebuilt from its artifact's metadata
    rebuilder: ClassVar[Any] = staticmethod(rebuild)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


@kind("vision.robustbench", RobustBenchRecipe)
def run(cfg: RobustBenchRecipe, ctx: RunContext) -> None:
    """Evaluate a RobustBench model from a local checkpoint (a baseline; nothing is trained)."""
    where = cfg.source or "recipe"
    data = load_data(ctx, cfg)
    model, ref = load_classifier(cfg.model.ref, where=where, field="model.ref", relative_to=cfg.source)
    check_fits(ref, data.num_classes, data.input_shape, data.name, where=where, field="model.ref")
    norm = {"Linf": "linf", "L2": "l2"}.get(ref.threat_model)
    if norm is not None and norm != cfg.threat.norm:
        raise UserError(f"the model is from RobustBench's {ref.threat_model} leaderboard but threat.norm is "
                        f"{cfg.threat.norm!r}; expected {norm!r}", where=where, field="threat.norm")
    if not any(e.name == "vision.clean_accuracy" for e in cfg.eval):
        raise UserError("RobustBench's model_info needs a clean accuracy; expected a vision.clean_accuracy "
                        "entry in [[eval]]", where=where, field="eval")
    model.to(ctx.device)
    results = ctx.evaluate(model, data)
    ctx.save_artifact("model", model.state_dict(), meta=classifier_meta(ref))
    out = cfg.output
    info = model_info(
        dataset=ref.dataset,
        threat_model=ref.threat_model,
        clean_acc=results["utility.clean_acc"],
        eps=cfg.threat.eps if ref.threat_model in ("Linf", "L2") else None,
        autoattack_acc=results.get("robustness.autoattack_acc"),
        corruptions_acc=results.get("robustness.corruption_acc"),
        name=out.title,
        architecture=ref.architecture,
        link=out.link,
        authors=out.authors,
        venue=out.venue,
        additional_data=out.additional_data,
    )
    text = json.dumps(info, indent=2) + "\n"
    ctx.save_file("robustbench", text.encode(), "application/json",
                  meta={"dataset": ref.dataset, "threat_model": ref.threat_model, "model": ref.name})
    if out.model_info is not None:
        path = model_info_path(out.model_info, ref.dataset, ref.threat_model, ref.name)
        _atomic_write(path, text)
        ctx.info(f"RobustBench model_info written to {path}")

