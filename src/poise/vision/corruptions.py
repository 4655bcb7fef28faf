"""``vision.corruptions``: accuracy on CIFAR-10-C / CIFAR-100-C (Hendrycks & Dietterich) read from local files.

The real layout, as distributed: one folder holding ``<corruption>.npy`` per corruption — uint8 images of
shape (5·N, 32, 32, 3), HWC, the test set corrupted at severity 1 (first N rows) to 5 (last N rows), with
N = 10,000 — and ``labels.npy`` (the N test labels repeated per severity: 5·N values; N values are read
the same way). Files are memory-mapped and only the rows a severity needs are read, so the full 2.9 GB
set costs little memory.

One evaluation scores every (corruption, severity) pair asked for on the first ``n`` images of each
severity: ``corruption_acc`` is the mean over all of them (RobustBench's ``corruptions_acc``),
``corruption_acc_<corruption>`` the mean over severities, ``corruption_acc_s<k>`` the mean over
corruptions, and ``corruption_acc_<corruption>_s<k>`` each cell. The default corruptions are the 15 of
the benchmark (RobustBench's list); the four extra ones shipped in the same folder (speckle noise,
Gaussian blur, spatter, saturate) can be named too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from poise.errors import UserError
from poise.evaluators import MetricSpec, evaluator
from poise.vision.evaluators import accuracy

BENCHMARK = (
    "shot_noise", "motion_blur", "snow", "pixelate", "gaussian_noise", "defocus_blur", "brightness", "fog",
    "zoom_blur", "frost", "glass_blur", "impulse_noise", "contrast", "jpeg_compression", "elastic_transform",
)
EXTRA = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CORRUPTIONS = BENCHMARK + EXTRA
SEVERITIES = 5


def _read(path: Path, field: str) -> np.ndarray:
    if not path.is_file():
        raise UserError(f"no file {path}; expected <root>/{path.name} (CIFAR-10-C layout: one <corruption>.npy "
                        "per corruption and labels.npy)", where=path.parent, field=field)
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as e:
        raise UserError(f"cannot read {path.name}: {' '.join(str(e).split())[:160]}; expected a .npy array",
                        where=path, field=field) from None


def load_labels(root: Path) -> np.ndarray:
    """``labels.npy``: N or 5·N integer labels (the real file repeats the N test labels per severity)."""
    labels = _read(root / "labels.npy", "labels")
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) == 0:
        raise UserError(f"labels.npy holds {labels.dtype} of shape {labels.shape}; expected one integer label "
                        "per image, shape (N,) or (5·N,)", where=root / "labels.npy", field="labels")
    return np.asarray(labels)


def load_corruption(root: Path, corruption: str, severity: int, n: int | None, labels: np.ndarray
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` images of ``corruption`` at ``severity`` (1–5) as uint8 (n, 3, 32, 32), and their labels."""
    if corruption not in CORRUPTIONS:
        raise UserError(f"unknown corruption {corruption!r}; expected one of: {', '.join(CORRUPTIONS)}",
                        field="corruptions")
    path = root / f"{corruption}.npy"
    images = _read(path, corruption)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8 or len(images) % SEVERITIES:
        raise UserError(f"{path.name} holds {images.dtype} of shape {images.shape}; expected uint8 images of "
                        "shape (5·N, H, W, 3), severities 1 to 5 stacked", where=path, field=corruption)
    per = len(images) // SEVERITIES
    if len(labels) not in (per, SEVERITIES * per):
        raise UserError(f"labels.npy has {len(labels)} labels but {path.name} has {per} images per severity; "
                        f"expected {per} or {SEVERITIES * per} labels", where=root / "labels.npy", field="labels")
    k = per if n is None else min(n, per)
    start = (severity - 1) * per
    x = np.ascontiguousarray(images[start : start + k].transpose(0, 3, 1, 2))
    y_rows = labels[start : start + k] if len(labels) == SEVERITIES * per else labels[:k]
    return torch.from_numpy(x), torch.from_numpy(np.asarray(y_rows, dtype=np.int64))


class CorruptionParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    root: Path = Field(..., description="folder of CIFAR-10-C or CIFAR-100-C (<corruption>.npy, labels.npy)")
    corruptions: list[str] = Field(default_factory=lambda: list(BENCHMARK), min_length=1,
                                   description="corruptions to score (default: the benchmark's 15)")
    severities: list[Annotated[int, Field(ge=1, le=5)]] = Field(default_factory=lambda: [1, 2, 3, 4, 5],
                                                                 min_length=1, description="severities 1–5")
    n: int | None = Field(None, gt=0, description="first n images of each severity (default all)")
    batch_size: int = Field(500, gt=0, le=100_000)

    @field_validator("corruptions")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        for c in v:
            if c not in CORRUPTIONS:
                raise ValueError(f"unknown corruption {c!r}; expected one of: {', '.join(CORRUPTIONS)}")
        if len(set(v)) != len(v):
            raise ValueError("a corruption is listed twice")
        return v

    @field_validator("severities")
    @classmethod
    def _unique(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("a severity is listed twice")
        return sorted(v)


def corruption_grid(model: torch.nn.Module, root: Path, corruptions: list[str], severities: list[int],
                    n: int | None, device: torch.device, batch_size: int = 500) -> dict[tuple[str, int], float]:
    """Accuracy for every (corruption, severity) pair."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise UserError(f"no folder {root}; expected the CIFAR-10-C / CIFAR-100-C folder", field="root")
    labels = load_labels(root)
    num_classes = None
    grid: dict[tuple[str, int], float] = {}
    for c in corruptions:
        for s in severities:
            x, y = load_corruption(root, c, s, n, labels)
            if num_classes is None:
                with torch.no_grad():
                    num_classes = int(model.eval()(x[:1].float().div(255).to(device)).shape[1])
                if int(y.max()) >= num_classes:
                    raise UserError(f"labels.npy has label {int(y.max())} but the model has {num_classes} classes; "
                                    "expected the corruption set of the model's dataset",
                                    where=root / "labels.npy", field="labels")
            grid[(c, s)] = accuracy(model, x, y, device, batch_size)
    return grid


@evaluator(
    "vision.corruptions",
    metrics=[MetricSpec("corruption_acc*", "robustness", "max", "accuracy on common corruptions (mean; per "
                        "corruption; per severity; per cell)")],
    params=CorruptionParams,
)
def corruptions_eval(model, data, ctx, *, root, corruptions, severities, n, batch_size) -> dict[str, float]:
    """Accuracy on CIFAR-10-C / CIFAR-100-C, per corruption and severity, and their mean."""
    if tuple(data.input_shape) != (3, 32, 32):
        raise UserError(f"the model takes inputs of shape {tuple(data.input_shape)} ({data.name}); CIFAR-10-C and "
                        "CIFAR-100-C images are 3×32×32", field="eval")
    grid = corruption_grid(model, root, corruptions, severities, n, ctx.device, batch_size)
    out = {"corruption_acc": float(np.mean(list(grid.values())))}
    for c in corruptions:
        out[f"corruption_acc_{c}"] = float(np.mean([grid[(c, s)] for s in severities]))
    for s in severities:
        out[f"corruption_acc_s{s}"] = float(np.mean([grid[(c, s)] for c in corruptions]))
    for (c, s), v in grid.items():
        out[f"corruption_acc_{c}_s{s}"] = v
    return out


# --------------------------------------------------------------------------- report


def _register_report() -> None:
    import plotly.graph_objects as go

    from poise.report import Block, report_section
    from poise.report.figures import esc

    @report_section("vision.corruptions", "Vision: common corruptions")
    def corruption_section(store, runs) -> list[Block]:
        """Accuracy per corruption and severity of every vision run scored by ``vision.corruptions``."""
        vision = [r for r in runs if r.kind.startswith("vision.") and r.status == "done"]
        finals = store.final_metrics([r.id for r in vision])
        rows, blocks = [], []
        for r in vision:
            m = finals.get(r.id, {})
            if "robustness.corruption_acc" not in m:
                continue
            names = [c for c in CORRUPTIONS if f"robustness.corruption_acc_{c}" in m]
            sev = [s for s in range(1, SEVERITIES + 1) if f"robustness.corruption_acc_s{s}" in m]
            for c in names:
                rows.append([r.name, r.id, c, *[f"{m[f'robustness.corruption_acc_{c}_s{s}'].value:.3f}"
                                                 if f"robustness.corruption_acc_{c}_s{s}" in m else "" for s in
                                                 range(1, SEVERITIES + 1)],
                             f"{m[f'robustness.corruption_acc_{c}'].value:.3f}"])
            rows.append([r.name, r.id, "mean", *[f"{m[f'robustness.corruption_acc_s{s}'].value:.3f}" if s in sev
                                                 else "" for s in range(1, SEVERITIES + 1)],
                         f"{m['robustness.corruption_acc'].value:.3f}"])
            if len(blocks) < 6 and names and sev:
                z = [[m[f"robustness.corruption_acc_{c}_s{s}"].value for s in sev] for c in names]
                fig = go.Figure(go.Heatmap(z=z, x=[f"severity {s}" for s in sev], y=[esc(c) for c in names],
                                           zmin=0, zmax=1, colorscale="Viridis", colorbar={"title": "accuracy"}))
                fig.update_layout(template="plotly_white", height=120 + 22 * len(names),
                                  margin={"l": 130, "r": 20, "t": 30, "b": 40})
                blocks.append(Block(f"{r.name} [{r.id[:6]}]: accuracy per corruption and severity", figure=fig))
        if not rows:
            return []
        table = Block("accuracy per corruption and severity",
                      table=(["run", "id", "corruption", "s1", "s2", "s3", "s4", "s5", "mean"], rows),
                      note="CIFAR-10-C / CIFAR-100-C read from local files; 'mean' rows are the mean over the "
                      "corruptions scored (corruption_acc is RobustBench's corruptions_acc).")
        return [table, *blocks]


_register_report()
