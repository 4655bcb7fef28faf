"""AutoAttack: our figure (torchattacks' parts, ``vision.robust_accuracy`` attack = "autoattack") against the
reference implementation's (Croce & Hein's code, the ``pyautoattack`` package, ``vision.autoattack_ref``) on
the same small model and the same examples, at the same budget, with both run times.

The model is the digits small CNN (width 16) trained for 150 Adam steps (seed 0), the examples the first
``n`` of the digits test split. Full mode runs the standard budget (100 iterations, 9 targets, 5,000 Square
queries) on 200 examples; ``--quick`` a reduced one (10 iterations, 3 targets, 100 queries) on 64. Timings
are measured in this process, one after the other, on a shared machine: treat the ratio as rough.
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F


def small_model():
    from poise.batching import batch_indices
    from poise.vision.data import VisionDataCfg, load_digits_data
    from poise.vision.models import build_classifier

    data = load_digits_data(VisionDataCfg(), seed=0)
    torch.manual_seed(0)
    model = build_classifier("small_cnn", num_classes=10, input_shape=data.input_shape, mean=data.mean,
                             std=data.std, width=16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = data.train
    for step in range(150):
        idx = batch_indices(step, len(x), 64, 0)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), data


def compare(quick: bool) -> list[dict]:
    """One row per eps: our AutoAttack accuracy, the reference's, their difference and run times."""
    from poise.vision.attacks import Attack
    from poise.vision.autoattack_ref import reference_autoattack
    from poise.vision.evaluators import robust_accuracy

    torch.set_num_threads(1)
    model, data = small_model()
    n = 64 if quick else 200
    budget = {"steps": 10, "n_targets": 3, "square_queries": 100} if quick else {
        "steps": 100, "n_targets": 9, "square_queries": 5000}
    x, y = data.test[0][:n], data.test[1][:n]
    rows = []
    for eps in (0.05, 0.1, 0.2):
        t0 = time.perf_counter()
        ours = robust_accuracy(model, x, y, Attack("autoattack", eps=eps, seed=0, **budget), torch.device("cpu"))
        t1 = time.perf_counter()
        _, ref = reference_autoattack(model, x, y, eps=eps, seed=0, **budget)
        t2 = time.perf_counter()
        rows.append({"eps": eps, "n": n, "clean": ref.clean_acc, "ours": ours, "reference": ref.robust_acc,
                     "diff": ours - ref.robust_acc, "ours_s": t1 - t0, "reference_s": t2 - t1,
                     "after": ref.after, "warnings": ref.warnings, "budget": budget})
    return rows


def main(quick: bool = False) -> str:
    rows = compare(quick)
    b = rows[0]["budget"]
    out = [f"Small CNN on digits (150 Adam steps, seed 0), first {rows[0]['n']} test examples, L∞, "
           f"{b['steps']} iterations, {b['n_targets']} target classes, {b['square_queries']} Square queries "
           f"({'reduced budget' if quick else 'the standard budget'}); clean accuracy {100 * rows[0]['clean']:.1f} %.",
           "", "| eps | ours (torchattacks parts) % | reference (pyautoattack) % | ours − reference (points) | "
           "time ours / reference | reference after APGD-CE / APGD-T / FAB-T / Square % | checks |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        after = " / ".join(f"{100 * v:.1f}" for v in r["after"].values())
        out.append(f"| {r['eps']:g} | {100 * r['ours']:.1f} | {100 * r['reference']:.1f} | {100 * r['diff']:+.1f} | "
                   f"{r['ours_s']:.1f} s / {r['reference_s']:.1f} s | {after} | "
                   f"{'; '.join(r['warnings']) or 'none'} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(main(quick="--quick" in sys.argv[1:]))
