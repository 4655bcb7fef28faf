"""GPU path check: one step-limited run of every recipe kind with ``--device cuda`` and AMP, on synthetic
inputs of paper scale, checking that nothing falls back to the CPU. Writes ``benchmarks/results/gpu.md``.

    python benchmarks/gpu_check.py [--steps 20] [--only vision.trades ...]

Inputs: CIFAR-10-shaped images (32×32×3, 10 classes) written in torchvision's on-disk layout from
random pixels, the shipped face and control data, and a ~0.5B-parameter random-weight Llama (the world
base recipe at 1280 hidden, 28 layers) that the language kinds start from. Checks, per kind:

* every module forward sees its parameters and tensor inputs on CUDA (a global forward pre-hook
  counts any that are not — "CPU fallbacks");
* forwards run under autocast when the kind uses ``ctx.autocast()`` (counted, shown, not required:
  kinds that train through TRL or stable-baselines3 use those libraries' own precision settings);
* ``torch.cuda.max_memory_allocated() > 0`` after the run;
* the step time is the median gap between optimizer steps (a global optimizer step hook, CUDA
  synchronised).

On a machine without CUDA it prints one line and exits with code 2.
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))

# one shipped recipe per kind; vision kinds use their CIFAR-10 recipes on the synthetic set
RECIPES = {
    "vision.erm": "vision/erm-cifar10.toml",
    "vision.pgd_at": "vision/pgd-at-cifar10.toml",
    "vision.trades": "vision/trades-cifar10.toml",
    "vision.fast_at": "vision/fast-at-cifar10.toml",
    "vision.ard": "vision/ard-cifar10.toml",
    "vision.rslad": "vision/rslad-cifar10.toml",
    "vision.mtard": "vision/mtard-cifar10.toml",
    "restoration.bicubic": "restoration/bicubic.toml",
    "restoration.degradation_gan": "restoration/degradation-gan.toml",
    "restoration.sr": "restoration/sr-robust.toml",
    "control.agent": "control/sac-pendulum.toml",
    "control.adversarial": "control/sac-pendulum-mas-at.toml",
    "control.attack": "control/attack-sac-pendulum.toml",
    "control.lipschitz_demos": "control/lipschitz-demos-pendulum.toml",
    "control.lipschitz_bc": "control/lipschitz-bc-pendulum.toml",
    "control.lipschitz_sweep": "control/lipschitz-sweep-pendulum.toml",
    "language.base": "language/base.toml",
    "language.sft": "language/sft.toml",
    "language.dpo": "language/dpo.toml",
    "language.reward_model": "language/reward-model.toml",
    "language.alphaalign": "language/alphaalign.toml",
    "merging.merge": None,  # built by `poise merge`, not a recipe file; merging.sweep runs it
    "merging.sweep": "merging/digits-sweep.toml",
    "merging.mix_vs_merge": "language/mix-vs-merge.toml",  # study.mix_vs_merge under its first name
    "study.mix_vs_merge": None,  # the same kind as merging.mix_vs_merge (its alias): that row covers it
    "study.compare": None,  # tunes and reruns other kinds' recipes: their rows cover its GPU path
    "vision.robustbench": None,  # scores a RobustBench checkpoint from disk: there is none to load here
    "study.schedules": None,  # reruns other kinds' recipes under each schedule: their rows cover it
}
NOT_RUN = {"merging.merge": "no shipped recipe (poise merge builds it); merging.sweep runs merges and scores them",
           "study.compare": "runs other kinds' recipes (their rows cover it)",
           "study.mix_vs_merge": "the same kind as merging.mix_vs_merge, its first name (that row runs it)",
           "vision.robustbench": "needs a RobustBench checkpoint on disk (trains nothing)",
           "study.schedules": "runs other kinds' recipes under each schedule (their rows cover it)"}
# a ~0.5B-parameter Llama: 28 × (attention 3.9M + MLP 13.3M) + embeddings
BIG_LM = {"vocab_size": 1024, "hidden_size": 1280, "num_layers": 28, "num_heads": 20, "num_kv_heads": 4,
          "intermediate_size": 3456, "max_length": 96}


def write_synthetic_cifar10(root: Path, n_train: int = 5000, n_test: int = 1000) -> Path:
    """Random 32×32×3 images with labels, in torchvision's ``cifar-10-batches-py`` layout (its own format)."""
    import numpy as np

    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    def batch(n: int) -> bytes:
        return pickle.dumps({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                             "labels": rng.integers(0, 10, n).tolist()})

    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(batch(n_train // 5))
    (folder / "test_batch").write_bytes(batch(n_test))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"class{i}" for i in range(10)]}))
    return root


class Probe:
    """Global hooks: CPU fallbacks and autocast per forward, optimizer step times."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.forwards = self.fallbacks = self.autocast = 0
        self.where: set[str] = set()
        self.step_times: list[float] = []
        self._handles = [torch.nn.modules.module.register_module_forward_pre_hook(self._forward),
                         torch.optim.Optimizer.register_optimizer_step_post_hook(self._step)]

    def _forward(self, module, args) -> None:  # noqa: ANN001
        torch = self.torch
        self.forwards += 1
        self.autocast += torch.is_autocast_enabled("cuda")
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        tensors += [p for p in module.parameters(recurse=False)]
        if any(t.device.type != "cuda" for t in tensors):
            self.fallbacks += 1
            self.where.add(type(module).__name__)

    def _step(self, optimizer, args, kwargs) -> None:  # noqa: ANN001
        self.torch.cuda.synchronize()
        self.step_times.append(time.perf_counter())

    def close(self) -> None:
        for h in self._handles:
            h.remove()

    def step_ms(self) -> float | None:
        gaps = [b - a for a, b in zip(self.step_times, self.step_times[1:], strict=False)]
        return 1000 * statistics.median(gaps) if gaps else None


def overrides_for(kind: str, steps: int, data_root: Path, base_run: str | None) -> dict:
    o: dict = {"device": "cuda", "train.amp": True}
    if kind.startswith("vision."):
        o |= {"data.root": str(data_root), "train.budget": {"steps": steps}}
    elif kind.startswith(("restoration.", "control.")):
        o |= {"train.budget": {"steps": steps}}
    elif kind == "language.base":
        o |= {"model.tiny": BIG_LM, "train.budget": {"steps": steps}, "train.batch_size": 8}
    elif kind.startswith("language.") and base_run:
        o |= {"model.base": f"run:{base_run}", "train.budget": {"steps": steps}}
    return o


def check(kind: str, recipe: str, steps: int, data_root: Path, store, base_run: str | None) -> dict:  # noqa: ANN001
    import torch

    from poise.errors import UserError
    from poise.recipes import load_recipe, shipped_recipes_root
    from poise.runner import Runner
    from poise.ui import UI

    torch.cuda.reset_peak_memory_stats()
    probe = Probe()
    row = {"kind": kind, "recipe": recipe}
    t0 = time.perf_counter()
    try:
        over = overrides_for(kind, steps, data_root, base_run)
        try:
            cfg = load_recipe(shipped_recipes_root() / recipe, over, quick=True)
        except UserError as e:  # a kind without one of these fields (no amp, no budget): drop it and say so
            dropped = [k for k in list(over) if k not in ("device",) and (e.field or "").startswith(k.split(".")[0])]
            for k in dropped:
                over.pop(k)
            row["note"] = f"without {', '.join(dropped)}: {e.message}" if dropped else ""
            cfg = load_recipe(shipped_recipes_root() / recipe, over, quick=True)
        rec = Runner(store, UI(quiet=True)).run(cfg)
        row |= {"status": rec.status, "run": rec.id}
    except Exception as e:  # noqa: BLE001 - one row per kind, whatever happens
        row |= {"status": "error", "note": f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"}
        traceback.print_exc()
    finally:
        probe.close()
    row |= {"seconds": time.perf_counter() - t0, "forwards": probe.forwards, "fallbacks": probe.fallbacks,
            "fallback_modules": sorted(probe.where), "autocast": probe.autocast, "step_ms": probe.step_ms(),
            "peak_mb": torch.cuda.max_memory_allocated() / 2**20}
    row["ok"] = row["status"] == "done" and row["fallbacks"] == 0 and row["peak_mb"] > 0
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--only", action="append", default=[])
    ap.add_argument("--out", default=str(HERE / "results" / "gpu.md"))
    args = ap.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_check: error: no CUDA device (torch.cuda.is_available() is False); run it on a machine with an "
              "NVIDIA GPU", file=sys.stderr)
        return 2
    from poise.store import Store

    kinds = [k for k in RECIPES if not args.only or k in args.only]
    rows = []
    with tempfile.TemporaryDirectory(prefix="poise-gpu-") as d:
        root = write_synthetic_cifar10(Path(d) / "cifar")
        store = Store(root=Path(d) / ".poise")
        base_run = None
        for kind in sorted(kinds, key=lambda k: (k != "language.base", k)):  # the big base first
            if RECIPES[kind] is None:
                rows.append({"kind": kind, "recipe": "", "status": "not run", "ok": None, "note": NOT_RUN[kind]})
                continue
            print(f"gpu_check: {kind} ...", file=sys.stderr, flush=True)
            row = check(kind, RECIPES[kind], args.steps, root, store, base_run)
            if kind == "language.base" and row["status"] == "done":
                base_run = row["run"]
            rows.append(row)
    name = torch.cuda.get_device_name(0)
    lines = [f"# GPU check on {name} (torch {torch.__version__}, CUDA {torch.version.cuda})", "",
             f"`python benchmarks/gpu_check.py --steps {args.steps}`: each kind's recipe with `--device cuda`, "
             f"`train.amp = true`, at most {args.steps} steps, quick evaluations.", "",
             "| kind | status | step ms | peak GPU MB | forwards | under autocast | CPU fallbacks | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ms = f"{r['step_ms']:.1f}" if r.get("step_ms") else ""
        fb = str(r.get("fallbacks", "")) + (f" ({', '.join(r['fallback_modules'])})" if r.get("fallback_modules")
                                             else "")
        lines.append(f"| {r['kind']} | {r['status']} | {ms} | {r.get('peak_mb', 0):.0f} | {r.get('forwards', '')} | "
                     f"{r.get('autocast', '')} | {fb} | {r.get('note', '')} |")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)
    return 0 if all(r["ok"] is not False for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
