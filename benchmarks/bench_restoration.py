"""Robust face SR benchmark: PSNR-Y / SSIM on clean, held-out-degraded and PGD-attacked LR faces for
bicubic, the clean-trained and degraded-trained baselines, the robust model and its no-Sinkhorn
ablation (mean ± std over seeds), and the Sinkhorn term's share of a training step.

Every number is computed here from runs trained in a temporary store; nothing is typed in.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

from poise.recipes import load_recipe
from poise.runner import Runner
from poise.store import Store
from poise.ui import UI

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "restoration"
VARIANTS = [
    ("bicubic", "bicubic.toml"),
    ("clean-trained", "sr-clean.toml"),
    ("degraded-trained", "sr-degraded.toml"),
    ("robust (ours)", "sr-robust.toml"),
    ("robust w/o Sinkhorn", "sr-no-sinkhorn.toml"),
]


def _fmt(values: list[float], digits: int = 2) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def quality_table(quick: bool) -> str:
    seeds = [0] if quick else [0, 1, 2]
    steps = 30 if quick else 300
    sr_over = {
        "train.budget.steps": steps,
        "train.batch_size": 16,
        "model.width": 16 if quick else 24,
        "train.checkpoint_every": 10_000,
    }
    gan_steps = 20 if quick else 200
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(root=Path(tmp) / ".poise")
        runner = Runner(store, UI(quiet=True))
        results: dict[str, list[dict[str, float]]] = {}
        families: list[str] = []
        for seed in seeds:
            for label, file in VARIANTS:
                over: dict[str, object] = {"seed": seed}
                if quick:
                    over["data.eval_limit"] = 16
                if file != "bicubic.toml":
                    over |= sr_over
                    over["degrade.gan"] = "degradation-gan.toml"
                cfg = load_recipe(RECIPES / file, over)
                if hasattr(cfg, "degrade"):
                    cfg.degrade.gan = str(_gan_recipe(Path(tmp), gan_steps))
                rec = runner.run(cfg)
                finals = {k: m.value for k, m in store.final_metrics([rec.id])[rec.id].items()}
                results.setdefault(label, []).append(finals)
                families = sorted(
                    {k.split("psnr_y_", 1)[1] for k in finals if k.startswith("robustness.psnr_y_")}
                    - {"held_out", "pgd"}
                )
        store.close()
    cols = ["clean"] + families + ["held-out mean", "PGD"]
    keys = (
        ["utility.{m}"]
        + [f"robustness.{{m}}_{f}" for f in families]
        + ["robustness.{m}_held_out", "robustness.{m}_pgd"]
    )
    lines = [
        f"PSNR-Y (dB, {steps} SR steps, width {sr_over['model.width']}, LFW subset x2, "
        f"{len(seeds)} seed(s): mean ± std; degradation GAN {gan_steps} steps, shared)",
        "",
        "| model | " + " | ".join(cols) + " | clean − held-out | clean − PGD |",
        "|---" * (len(cols) + 3) + "|",
    ]

    def metric(rows: list[dict[str, float]], key: str) -> list[float]:
        return [r[key] for r in rows]

    for label, rows in results.items():
        ps = [metric(rows, k.format(m="psnr_y")) for k in keys]
        drop_h = [c - h for c, h in zip(ps[0], ps[-2], strict=True)]
        drop_p = [c - p for c, p in zip(ps[0], ps[-1], strict=True)]
        lines.append(
            f"| {label} | " + " | ".join(_fmt(v) for v in ps) + f" | {_fmt(drop_h)} | {_fmt(drop_p)} |"
        )
    lines += [
        "",
        "SSIM (Y channel, same runs)",
        "",
        "| model | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for label, rows in results.items():
        ss = [metric(rows, k.format(m="ssim")) for k in keys]
        lines.append(f"| {label} | " + " | ".join(_fmt(v, 3) for v in ss) + " |")
    lines += [
        "",
        "Feature smoothness (mean ‖f(x′) − f(x)‖ / ‖x′ − x‖ over held-out degradations; relative norms "
        "in brackets; lower is smoother)",
        "",
        "| model | smoothness | relative |",
        "|---|---|---|",
    ]
    for label, rows in results.items():
        if "robustness.feature_smoothness" in rows[0]:
            lines.append(
                f"| {label} | {_fmt(metric(rows, 'robustness.feature_smoothness'), 3)} | "
                f"{_fmt(metric(rows, 'robustness.feature_smoothness_rel'), 3)} |"
            )
    return "\n".join(lines)


def _gan_recipe(tmp: Path, steps: int) -> Path:
    """A copy of the shipped degradation GAN recipe with the benchmark's step budget."""
    text = (
        (RECIPES / "degradation-gan.toml")
        .read_text()
        .replace("budget = { steps = 600 }", f"budget = {{ steps = {steps} }}")
    )
    out = tmp / "degradation-gan.toml"
    out.write_text(text)
    return out


def sinkhorn_share(quick: bool) -> str:
    """Time of the Sinkhorn term (forward + backward) as a share of one full robust training step."""
    from poise.restoration.data import FaceDataCfg, load_faces
    from poise.restoration.degradations import TRAIN_FAMILIES, Mixture, bicubic_down, build_family, generator
    from poise.restoration.losses import SinkhornAlign, SinkhornCfg, d_loss, g_loss
    from poise.restoration.models import PatchDiscriminator, SRModelCfg, build_sr

    data = load_faces(FaceDataCfg())
    source = Mixture([build_family(f, 2) for f in TRAIN_FAMILIES])
    reps = 5 if quick else 20
    lines = [
        "Sinkhorn term time per training step (geomloss tensorized, CPU, median of "
        f"{reps} interleaved repetitions)",
        "",
        "| width | batch | step with Sinkhorn (ms) | Sinkhorn fwd+bwd (ms) | share of step |",
        "|---|---|---|---|---|",
    ]
    for width, bs in [(16, 16)] if quick else [(16, 16), (32, 32), (32, 64)]:
        model = build_sr(SRModelCfg(width=width), 1, 2)
        disc = PatchDiscriminator(1, width)
        opt = torch.optim.Adam(model.parameters(), 1e-4)
        d_opt = torch.optim.Adam(disc.parameters(), 1e-4)
        align = SinkhornAlign(SinkhornCfg())
        g = generator(0)
        hr = data.train_batch(torch.arange(bs) % len(data.train), g)
        clean = bicubic_down(hr, 2)
        deg = source(hr, g, 12)
        x = 0.5 * deg + 0.5 * clean
        steps, sks = [], []
        for _ in range(reps + 2):
            t0 = time.perf_counter()
            f = model.features(x)
            sr = model.upsample(f, x)
            loss = torch.nn.functional.l1_loss(sr, hr) + 0.005 * g_loss(disc(sr), "vanilla")
            fc = model.features(clean)
            t1 = time.perf_counter()
            sk = align(fc, f)
            t2 = time.perf_counter()
            grads = torch.autograd.grad(sk, [fc, f], retain_graph=True)
            t3 = time.perf_counter()
            opt.zero_grad()
            (loss + sk).backward()
            opt.step()
            dl = d_loss(disc(hr), disc(sr.detach()), "vanilla")
            d_opt.zero_grad()
            dl.backward()
            d_opt.step()
            t4 = time.perf_counter()
            del grads
            # the step counts the Sinkhorn backward once (inside the total backward), so subtract the
            # separate autograd.grad call we made to time it
            steps.append((t4 - t0) - (t3 - t2))
            sks.append((t2 - t1) + (t3 - t2))
        step_ms, sk_ms = statistics.median(steps[2:]) * 1e3, statistics.median(sks[2:]) * 1e3
        lines.append(f"| {width} | {bs} | {step_ms:.1f} | {sk_ms:.1f} | {sk_ms / step_ms:.0%} |")
    return "\n".join(lines)


def main(quick: bool) -> str:
    return quality_table(quick) + "\n\n" + sinkhorn_share(quick)


if __name__ == "__main__":
    import sys

    print(main(quick="--quick" in sys.argv))
