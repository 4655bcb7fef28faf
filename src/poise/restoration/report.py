"""Report section: a PNG grid of faces (LR, bicubic, the trained variants, HR) and a per-run PSNR table.

The grid shows test faces degraded by a held-out family (``compound`` by default: motion blur, Poisson
noise, JPEG), super-resolved by the newest finished run of each variant at the same geometry as the
newest robust run; the LR column is nearest-neighbour enlarged so every column has the HR size.
"""

from __future__ import annotations

from typing import Any

import torch

from poise.report import Block, report_section
from poise.report.figures import png_bytes
from poise.store import RunRecord, Store

VARIANT_ORDER = (
    "clean-trained",
    "degraded-trained",
    "robust",
    "robust w/o Sinkhorn",
    "robust (clean term only)",
    "robust (degraded term only)",
)
TABLE_METRICS = (
    ("utility.psnr_y", "PSNR-Y clean"),
    ("utility.ssim", "SSIM clean"),
    ("robustness.psnr_y_held_out", "PSNR-Y held-out"),
    ("robustness.psnr_y_pgd", "PSNR-Y PGD"),
    ("robustness.feature_smoothness", "feature smoothness"),
)


def _variant(store: Store, run: RunRecord) -> str | None:
    if run.kind == "restoration.bicubic":
        return "bicubic"
    try:
        return str(store.artifact(run.id, "model").meta.get("variant"))
    except Exception:  # no model artifact (an unfinished or evaluation-only run)
        return None


def face_grid(columns: dict[str, torch.Tensor]) -> bytes:
    """A PNG: one row per face, one column per method (tensors ``[N, C, H, W]`` in [0, 1], same size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(columns)
    n = len(next(iter(columns.values())))
    fig, axes = plt.subplots(n, len(names), figsize=(1.3 * len(names), 1.3 * n + 0.3), squeeze=False)
    for j, name in enumerate(names):
        for i in range(n):
            img = columns[name][i].clamp(0, 1)
            ax = axes[i][j]
            if img.shape[0] == 1:
                ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(name, fontsize=7)
    fig.tight_layout(pad=0.2)
    return png_bytes(fig, dpi=110)


def grid_for(
    store: Store, sr_runs: dict[str, RunRecord], family: str = "compound", faces: int = 4
) -> bytes | None:
    """The face grid for the newest run of each variant (None when there is no robust or any SR run)."""
    from poise.restoration.data import FaceDataCfg, load_faces
    from poise.restoration.degradations import bicubic_up
    from poise.restoration.evaluators import degraded_test, super_resolve
    from poise.restoration.sr import load_sr_model

    if not sr_runs:
        return None
    ref = sr_runs.get("robust") or next(iter(sr_runs.values()))
    data_cfg: dict[str, Any] = dict(ref.config["data"])
    data_cfg["eval_limit"] = faces
    data = load_faces(FaceDataCfg(**data_cfg))
    lr = degraded_test(data, family, 1234)
    cols: dict[str, torch.Tensor] = {
        f"LR ({family})": lr.repeat_interleave(data.scale, -1).repeat_interleave(data.scale, -2),
        "bicubic": bicubic_up(lr, data.scale),
    }
    for v in VARIANT_ORDER:
        run = sr_runs.get(v)
        if run is None or run.config["data"].get("hr_size") != data.hr_size:
            continue
        model = load_sr_model(store, run.id)
        cols[v] = super_resolve(model, lr, torch.device("cpu"))
    cols["HR"] = data.test
    return face_grid(cols)


@report_section("restoration.sr", "Face super-resolution")
def section(store: Store, runs: list[RunRecord]) -> list[Block]:
    mine = [r for r in runs if r.kind in ("restoration.sr", "restoration.bicubic") and r.status == "done"]
    if not mine:
        return []
    finals = store.final_metrics([r.id for r in mine])
    rows = []
    newest: dict[str, RunRecord] = {}
    for r in sorted(mine, key=lambda r: r.started):
        v = _variant(store, r)
        if v is None:
            continue
        if r.kind == "restoration.sr":
            newest[v] = r
        m = finals.get(r.id, {})
        rows.append(
            [r.name, r.id[:10], v, r.seed] + [f"{m[k].value:.3f}" if k in m else "" for k, _ in TABLE_METRICS]
        )
    blocks = [
        Block(
            "PSNR / SSIM per run",
            table=(["run", "id", "variant", "seed"] + [t for _, t in TABLE_METRICS], rows),
            note="PSNR and SSIM on the Y channel, scale border pixels cropped (scikit-image); held-out = "
            "mean over degradation families never seen in training; PGD = L-inf attack on the LR input "
            "minimising PSNR.",
        )
    ]
    try:
        png = grid_for(store, newest)
    except Exception as e:  # data no longer available (a local folder) must not break the whole report
        return blocks + [Block("faces", html=f'<p class="note">face grid skipped: {type(e).__name__}</p>')]
    if png is not None:
        blocks.insert(
            0,
            Block(
                "faces under a held-out degradation",
                png=png,
                slug="restoration-faces",
                note="rows: test faces; columns: degraded LR (enlarged), bicubic, each trained variant "
                "(newest run), HR",
            ),
        )
    return blocks
