"""Costs across GPUs, per phase, and predicted early: the Green-AI comparison and poise's own runs.

1. A planned vision job (ResNet-50, 90 ImageNet epochs) and language job (BERT-large, 2 SQuAD epochs)
   projected on each GPU from the measured throughputs in ``poise/data/gpus.toml`` (sources printed),
   and the order of each GPU pair in time and CO2 — the Green-AI effect: the faster A100 emits less
   than the T4 on the transformer job.
2. One run per domain trained here (vision PGD-AT, restoration SR, control SAC, the tiny LM's
   pretraining), each projected onto the GPUs from its own counted FLOPs (``poise carbon compare``).
3. Each run's time and energy per phase (``ctx.phase``), one run per domain: attack/update (vision),
   degradation/update (restoration), rollout/learn (control), update (the LM's pretraining) and
   generation/reward/update (language RL: AlphaAlign PPO on that LM), io/compute (merging three
   safetensors files of random weights with TIES).
4. Each run's predicted final time and energy at 5 % and 25 % of its budget, and the error against
   the loop's end and the run's final figure (evaluation included).

Timings are measured on a shared machine while other work runs: they are noisy.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from poise import prediction
from poise.carbon import grid_intensity
from poise.projection import compare, estimate, gpu_data

ROOT = Path(__file__).resolve().parents[1] / "recipes"
GPUS = ["A100-SXM", "A100-PCIe", "H100-SXM", "V100", "T4", "L4", "RTX3090"]
PAIRS = [("A100-SXM", "T4"), ("A100-PCIe", "T4"), ("H100-SXM", "A100-SXM"), ("A100-SXM", "V100"), ("L4", "T4"),
         ("RTX3090", "V100")]


def _jobs() -> list[tuple[str, float, str]]:
    w = gpu_data().workloads
    return [("ResNet-50, 90 epochs of ImageNet-1k (1.28M images)", 1.281e6 * 90 * w["cnn"].flops_per_item, "cnn"),
            ("BERT-large, 2 epochs of SQuAD v1.1 (88k sequences)", 88e3 * 2 * w["transformer-large"].flops_per_item,
             "transformer-large")]


def planned(country: str) -> str:
    grid = grid_intensity(country)
    lines = [f"Planned jobs, fp16 mixed precision, PUE 1.2, grid {country} ({grid:.0f} g CO2/kWh), rated power.", ""]
    sources: dict[str, str] = {}
    pair_rows = []
    for title, flops, wl in _jobs():
        rows = {e.gpu: e for e in estimate(flops, GPUS, precision="fp16", workload=wl, pue=1.2, intensity=grid)}
        lines += [f"**{title}**: {flops:.3g} FLOPs, workload class {wl}.", "",
                  "| GPU | TFLOP/s achieved | throughput | power W | hours | kWh | kg CO2 |",
                  "|---|---:|---|---:|---:|---:|---:|"]
        for e in sorted(rows.values(), key=lambda e: e.co2_kg):
            lines.append(f"| {e.gpu} | {e.achieved_tflops:.3g} | {e.throughput_status} | {e.power_w:.0f} | "
                         f"{e.hours:.3g} | {e.energy_kwh:.3g} | {e.co2_kg:.3g} |")
            sources[f"{e.gpu} ({wl})"] = e.throughput_source
        lines.append("")
        for a, b in PAIRS:
            ea, eb = rows[a], rows[b]
            pair_rows.append(f"| {wl} | {a} vs {b} | {ea.hours / eb.hours:.2f} | {ea.co2_kg / eb.co2_kg:.2f} | "
                             f"{a if ea.co2_kg < eb.co2_kg else b} |")
    lines += ["Pairs: time and CO2 of the first GPU over the second (< 1: the first is faster / emits less).", "",
              "| workload | pair | time ratio | CO2 ratio | emits less |", "|---|---|---:|---:|---|", *pair_rows, "",
              "Throughput sources:", ""]
    lines += [f"- {k}: {v}" for k, v in sources.items()]
    return "\n".join(lines)


# (label, recipe, quick flag, overrides per mode)
RUNS: list[tuple[str, str, bool, dict[str, Any], dict[str, Any]]] = [
    ("vision PGD-AT", "vision/pgd-at-digits.toml", True,
     {"train.budget": {"steps": 200}}, {"train.budget": {"steps": 40}}),
    ("restoration SR", "restoration/sr-clean.toml", True,
     {"train.budget": {"steps": 200}}, {"train.budget": {"steps": 40}}),
    ("control SAC", "control/sac-pendulum.toml", True,
     {"train.budget": {"steps": 2000}}, {"train.budget": {"steps": 400}}),
    ("language base LM", "language/base.toml", True,
     {"train.budget": {"steps": 200}}, {"train.budget": {"steps": 40}}),
    ("language RL (AlphaAlign PPO)", "language/alphaalign.toml", True,
     {"train.budget": {"steps": 40}}, {"train.budget": {"steps": 8}}),
]
MERGE_SHAPES = {"full": [(1024, 1024)] * 6, "quick": [(256, 256)] * 3}  # float32 tensors per model


def _merge_recipe(folder: Path, quick: bool) -> Any:
    """A ``merging.merge`` of two random models onto a random base (TIES), files in ``folder``."""
    import torch
    from safetensors.torch import save_file

    from poise.recipes import build_recipe

    g = torch.Generator().manual_seed(0)
    paths = []
    for name in ("base", "a", "b"):
        shapes = MERGE_SHAPES["quick" if quick else "full"]
        save_file({f"layer{i}.weight": torch.randn(s, generator=g) for i, s in enumerate(shapes)},
                  str(folder / f"{name}.safetensors"))
        paths.append(str(folder / f"{name}.safetensors"))
    return build_recipe({"kind": "merging.merge", "name": "merge-ties", "model": {
        "method": "ties", "density": 0.5, "models": paths[1:], "base": paths[0],
        "output": str(folder / "merged")}}, where="bench_carbon")


def measured(quick: bool) -> str:
    from poise.recipes import load_recipe
    from poise.runner import Runner
    from poise.store import Store
    from poise.ui import UI

    out_compare, out_phases, out_pred = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(root=Path(tmp) / ".poise")
        runner = Runner(store, UI(quiet=True), device="cpu")
        base_lm = None
        for label, path, use_quick, full, small in [*RUNS, ("merging (TIES, files)", "", False, {}, {})]:
            if not path:
                rec = runner.run(_merge_recipe(Path(tmp), quick))
            else:
                over = {**(small if quick else full), "train.checkpoint_every": 100_000}
                if "alphaalign" in path and base_lm is not None:
                    over["model.base"] = f"run:{base_lm}"  # RL on the LM pretrained just above
                rec = runner.run(load_recipe(ROOT / path, over, quick=use_quick))
                if "base.toml" in path:
                    base_lm = rec.id
            cost = store.cost(rec.id)
            flops = store.final_metrics([rec.id]).get(rec.id, {}).get("cost.flops")
            if flops is not None and label in ("vision PGD-AT", "language base LM"):
                m, rows = compare(store, rec.id, GPUS, ["USA"], pue=1.2)
                out_compare += [f"**{label}** (run measured on this CPU: {m.wall_s:.1f} s, {m.energy_kwh * 3.6e6:.3g} "
                                f"J; {m.flops:.3g} FLOPs; {rows[0][1].assumptions[0].split(';')[0]}).", "",
                                "| GPU | TFLOP/s | throughput | seconds | energy J | mg CO2 (USA) |",
                                "|---|---:|---|---:|---:|---:|"]
                for _c, e in sorted(rows, key=lambda r: r[1].co2_kg):
                    out_compare.append(f"| {e.gpu} | {e.achieved_tflops:.3g} | {e.throughput_status} | "
                                       f"{e.hours * 3600:.3g} | {e.energy_kwh * 3.6e6:.3g} | {e.co2_kg * 1e6:.3g} |")
                out_compare.append("")
            total_kwh = max(cost.energy_kwh, 1e-30)
            for p in store.phase_costs(rec.id):
                out_phases.append(f"| {label} | {p.phase} | {p.wall_s:.2f} ({100 * p.wall_s / cost.wall_s:.0f} %) | "
                                  f"{p.energy_kwh * 3.6e6:.3g} ({100 * p.energy_kwh / total_kwh:.0f} %) | {p.label} |")
            if not path:
                continue  # a merge has no budget loop to predict
            data = prediction.load(store, rec.id)
            for mark in (0.05, 0.25):
                p = next((q for q in (data or {}).get("predictions", []) if abs(q["mark"] - mark) < 1e-9), None)
                if p is None:
                    out_pred.append(f"| {label} | {100 * mark:.0f} % | – | – | – | – |")
                    continue
                out_pred.append(
                    f"| {label} | {100 * mark:.0f} % (step {p['step']}/{p['total_steps']}) | "
                    f"{p['predicted']['wall_s']:.1f} / {p['run_actual']['wall_s']:.1f} | "
                    f"{p['error_loop']['wall_s']:+.0%} / {p['error_run']['wall_s']:+.0%} | "
                    f"{p['predicted']['energy_kwh'] * 3.6e6:.3g} / {p['run_actual']['energy_kwh'] * 3.6e6:.3g} | "
                    f"{p['error_loop']['energy_kwh']:+.0%} / {p['error_run']['energy_kwh']:+.0%} |")
    methods = "energy measured by CodeCarbon on this machine; its CPU power is an estimate (rated power × load) " \
              "unless the phase label says measured"
    return "\n".join([
        "### Measured runs projected on GPUs", "",
        "The job's FLOPs counted by torch's FlopCounterMode during the run, at the measured throughput of the "
        "workload class (projected times are lower bounds for models this small).", "", *out_compare,
        "### Time and energy per phase", "", f"One run per domain ({methods}); energy split by CPU time (CPU) and "
        "wall time (RAM).", "", "| run | phase | wall s (share) | energy J (share) | label |",
        "|---|---|---:|---:|---|",
        *out_phases, "",
        "### Predicted final cost", "",
        "Linear extrapolation of the training loop at 5 % and 25 % of the budget; error = predicted / actual − 1 "
        "against the loop's end / the run's final figure (which adds the evaluation after the loop).", "",
        "| run | at | wall s predicted / final | error loop / run | energy J predicted / final | error loop / run |",
        "|---|---|---:|---:|---:|---:|", *out_pred])


def main(quick: bool) -> str:
    return "### GPU comparison of planned jobs\n\n" + planned("USA") + "\n\n" + measured(quick)


if __name__ == "__main__":
    import sys

    print(main(quick="--quick" in sys.argv))
