"""Merging benchmark: poise's streamed merge against mergekit on the same two HF Llama models (CPU).

Both tools merge the same safetensors folders (random weights of a Llama of ~100M parameters, fp32,
written here with the real Hugging Face layout) into a new folder. Each merge runs in its own fresh
Python process so that its peak RSS (``VmHWM`` of /proc/self/status) is its own; the process's RSS
right after its imports is reported too, since mergekit needs torch and transformers and poise's
streamed merge only NumPy.
Wall time is the merge call alone (imports excluded), the best of ``repeats`` runs, alternating tools so
both see the same page cache. Figures are ratios from one run: poise / mergekit for time, peak RSS / one
model's size on disk for memory.

The "mix data or merge models" table of the issue needs the language lab's SFT training; it is not
part of this benchmark yet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SIZES = {  # hidden, intermediate, layers, vocab
    "full": (768, 2048, 8, 32000),  # ≈ 106M parameters, 425 MB in fp32
    "quick": (128, 256, 2, 2000),
}
METHODS = {
    "linear": (
        {"merge_method": "linear", "models": [("a", {"weight": 0.5}), ("b", {"weight": 0.5})]},
        {"method": "linear", "weights": [0.5, 0.5]},
    ),
    "slerp": (
        {
            "merge_method": "slerp",
            "base_model": "a",
            "models": [("a", {}), ("b", {})],
            "parameters": {"t": 0.4},
        },
        {"method": "slerp", "t": 0.4},
    ),
    "ties": (
        {
            "merge_method": "ties",
            "base_model": "base",
            "models": [("a", {"weight": 0.5, "density": 0.5}), ("b", {"weight": 0.5, "density": 0.5})],
        },
        {"method": "ties", "weights": [0.5, 0.5], "density": 0.5, "base": "base"},
    ),
}


def llama_shapes(hidden: int, inter: int, layers: int, vocab: int) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of ``LlamaForCausalLM`` (untied embeddings, as many KV heads as heads)."""
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "input_layernorm.weight": (hidden,),
                p + "post_attention_layernorm.weight": (hidden,),
                **{p + f"self_attn.{n}_proj.weight": (hidden, hidden) for n in "qkvo"},
                p + "mlp.gate_proj.weight": (inter, hidden),
                p + "mlp.up_proj.weight": (inter, hidden),
                p + "mlp.down_proj.weight": (hidden, inter),
            }
        )
    shapes.update({"model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)})
    return shapes


def write_models(root: Path, hidden: int, inter: int, layers: int, vocab: int) -> int:
    """Write base, a, b (HF Llama folders with random fp32 weights); returns one model's bytes on disk."""
    import numpy as np
    from safetensors.numpy import save_file

    heads = max(1, hidden // 64)
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "vocab_size": vocab,
        "max_position_embeddings": 2048,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "hidden_act": "silu",
    }
    rng = np.random.default_rng(0)
    shared = {
        k: rng.standard_normal(s, dtype=np.float32) * 0.02
        for k, s in llama_shapes(hidden, inter, layers, vocab).items()
    }
    size = 0
    for i, name in enumerate(["base", "a", "b"]):
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps(config, indent=2))
        r = np.random.default_rng(i + 1)
        tensors = {k: v + r.standard_normal(v.shape, dtype=np.float32) * 0.005 for k, v in shared.items()}
        save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        size = (folder / "model.safetensors").stat().st_size
        del tensors
    return size


RUNNER = textwrap.dedent("""
    import json, os, sys, time
    os.environ["HF_HUB_OFFLINE"] = "1"
    tool, method, root, out, cfg = sys.argv[1:6]
    cfg = json.loads(cfg)
    def rss():  # VmHWM: this process image's peak (ru_maxrss would carry the parent's over fork + exec)
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    if tool == "mergekit":
        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions
        conf = {k: v for k, v in cfg.items() if k != "models"}
        conf["models"] = [{"model": os.path.join(root, m), "parameters": p} for m, p in cfg["models"]]
        if "base_model" in conf:
            conf["base_model"] = os.path.join(root, conf["base_model"])
        conf["dtype"] = "float32"
        conf = MergeConfiguration.model_validate(conf)
        opts = MergeOptions(copy_tokenizer=False, quiet=True, write_model_card=False)
        after_import = rss()
        t0 = time.perf_counter()
        run_merge(conf, out, opts)
    else:
        from poise.merging import merge_files
        base = cfg.pop("base", None)
        models = [os.path.join(root, m) for m in ("a", "b")]
        after_import = rss()
        t0 = time.perf_counter()
        merge_files(models, out, base=os.path.join(root, base) if base else None, **cfg)
    print(json.dumps({"seconds": time.perf_counter() - t0, "peak_rss": rss(), "import_rss": after_import}))
""")


def run_one(tool: str, method: str, root: Path, out: Path) -> dict[str, float]:
    mk, ours = METHODS[method]
    cfg = mk if tool == "mergekit" else ours
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")
        + os.pathsep
        + os.environ.get("PYTHONPATH", ""),
    }
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, tool, method, str(root), str(out), json.dumps(cfg)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{tool} {method} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_output(a: Path, b: Path) -> tuple[float, int]:
    """Largest absolute difference between two merged folders, and how many entries differ by > 1e-5."""
    import numpy as np
    from safetensors import safe_open

    def tensors(folder: Path) -> dict[str, tuple[Path, str]]:
        out = {}
        for f in sorted(folder.glob("*.safetensors")):
            with safe_open(str(f), "numpy") as h:
                out.update({k: (f, k) for k in h.keys()})  # noqa: SIM118 - safe_open has no __iter__
        return out

    ta, tb = tensors(a), tensors(b)
    assert sorted(ta) == sorted(tb)
    worst, n = 0.0, 0
    for k, (fa, _) in ta.items():
        with safe_open(str(fa), "numpy") as ha, safe_open(str(tb[k][0]), "numpy") as hb:
            d = np.abs(ha.get_tensor(k) - hb.get_tensor(k))
            worst = max(worst, float(d.max()))
            n += int((d > 1e-5).sum())
    return worst, n


def main(quick: bool = False) -> str:
    hidden, inter, layers, vocab = SIZES["quick" if quick else "full"]
    methods = ["ties"] if quick else ["linear", "slerp", "ties"]
    repeats = 1 if quick else 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="poise-bench-merging-") as tmp:
        root = Path(tmp)
        size = write_models(root, hidden, inter, layers, vocab)
        n_params = size // 4
        for method in methods:
            best: dict[str, dict[str, float]] = {}
            for rep in range(repeats):
                for tool in ("poise", "mergekit") if rep % 2 == 0 else ("mergekit", "poise"):
                    out = root / f"out-{tool}-{method}"
                    if out.exists():
                        import shutil

                        shutil.rmtree(out)
                    r = run_one(tool, method, root, out)
                    prev = best.get(tool)
                    best[tool] = (
                        r
                        if prev is None
                        else {
                            "seconds": min(prev["seconds"], r["seconds"]),
                            "peak_rss": max(prev["peak_rss"], r["peak_rss"]),
                            "import_rss": r["import_rss"],
                        }
                    )
            diff, n_diff = same_output(root / f"out-poise-{method}", root / f"out-mergekit-{method}")
            p, m = best["poise"], best["mergekit"]
            rows.append(
                f"| {method} | {p['seconds']:.2f} | {m['seconds']:.2f} | "
                f"**{p['seconds'] / m['seconds']:.2f}×** | "
                f"{p['peak_rss'] / 1e6:.0f} ({p['import_rss'] / 1e6:.0f}) | "
                f"{m['peak_rss'] / 1e6:.0f} ({m['import_rss'] / 1e6:.0f}) | "
                f"**{p['peak_rss'] / size:.2f}×** | {m['peak_rss'] / size:.2f}× | {diff:.1e} | {n_diff} |"
            )
    head = (
        f"Two Llama models (hidden {hidden}, {layers} layers, vocab {vocab}: "
        f"{n_params / 1e6:.0f}M parameters, "
        f"{size / 1e6:.0f} MB each in fp32; TIES also reads a base) merged on CPU by poise (`merge_files`, "
        f"streamed) and mergekit {_mergekit_version()} (`run_merge`, default options), "
        "each in a fresh process, "
        f"best wall time of {repeats} alternating run(s). "
        "Goals: time ratio ≤ 0.8, poise peak RSS ≤ 1.5× one model.\n\n"
        "| method | poise s | mergekit s | time ratio | poise peak RSS MB (after imports) | "
        "mergekit peak RSS MB (after imports) | poise RSS / model | mergekit RSS / model | "
        "max abs diff | entries > 1e-5 |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    note = (
        f"\n\nOutputs are compared entry by entry ({n_params / 1e6:.0f}M entries). TIES keeps exactly k "
        "entries per task vector; when several share the k-th magnitude, poise keeps the first in flat order "
        "and mergekit whichever `torch.argsort` puts first, so a handful of entries can differ by one "
        "task-vector value."
    )
    return head + "\n".join(rows) + note + "\n\n" + mix_vs_merge(quick)


MIX_KEYS = ("utility.benign_acc", "safety.harmful_compliance", "safety.over_refusal")

# The size `make bench` runs (the shipped recipe's full form is 54 SFT/DPO trainings of 300 steps on a base of 1,500
# steps: hours on a 2-core CPU): the recipe's quick form (the quick base: 700 steps) with the paper's design put
# back — all four merge methods, the full weight grid, every world language, three seeds — and 60 training steps
# per SFT / DPO model, scored on a larger test split. ``POISE_BENCH_MIX=full`` runs the shipped full form.
_MIX_SPLIT = {"train.budget.steps": 60, "data.world.benign.test": 12, "data.world.harmful.test": 12,
              "data.world.borderline.test": 8}
MIX_MEDIUM = {
    "model.seeds": [0, 1, 2], "model.methods": ["linear", "slerp", "ties", "dare_ties"],
    "model.grid": [0.0, 0.3, 0.5, 0.7, 1.0], "model.languages": ["en", "fr", "de", "es", "ru", "sw"],
    "model.sft_set": _MIX_SPLIT, "model.dpo_set": _MIX_SPLIT,
}
MIX_MEDIUM_SIZE = ("the recipe's quick form (quick base of 700 steps) with every merge method, the full weight grid, "
                   "the six world languages and three seeds; each SFT / DPO model 60 steps; test split 12 benign, 12 "
                   "harmful and 8 borderline prompts per language")


def mix_vs_merge(quick: bool) -> str:
    """The shipped ``merging/mix-vs-merge.toml`` study: SFT and DPO checkpoints, merge weights searched on val,
    seeds on test; the table of every model (mean ± 95 % interval) and the best merge per group vs the mix."""
    import json

    from language_lab import Lab

    from poise.stats import Interval

    full = os.environ.get("POISE_BENCH_MIX") == "full" and not quick
    lab = Lab(quick or not full)
    overrides = {} if quick or full else MIX_MEDIUM
    size = "the recipe's quick form" if quick else ("the shipped full form" if full else MIX_MEDIUM_SIZE)
    run = lab.run("experiment", "merging/mix-vs-merge.toml", overrides)
    art = next(a for a in lab.store.artifacts(run.id) if a.name == "mix_vs_merge")
    table = json.loads(art.path.read_text())
    langs = table["languages"]
    keys = [*MIX_KEYS, *(f"safety.harmful_compliance_{lang}" for lang in langs)]

    def cell(d: dict | None, scale: float = 100.0) -> str:
        if not d:
            return ""
        iv = Interval(**{k: (float("nan") if v is None else v) for k, v in d["interval"].items()})
        return iv.format(scale=scale, digits=3)

    lines = [
        f"Mix vs merge on the safety world (`merging/mix-vs-merge.toml`; size: {size}; seeds "
        f"{table['seeds']}): SFT and DPO of one base chat model on the general + safety data mix, vs merges of "
        "general-only and safety-only models (objective-based) and of one model per language (language-based); "
        f"merge weights searched on val over {table['grid']} (weight of the focus model: safety, or the first "
        "language), then every seed merged at the chosen weight and scored on test. Rates in % (mean ± 95 % "
        "interval over seeds); harm = harmful compliance (lower is better).",
        "",
        "| stage | group | method | models | weight | benign acc | harm | over-refusal | "
        + " | ".join(f"harm {x}" for x in langs) + " |",
        "|---|---|---|---|---|" + "---|" * (3 + len(langs)),
    ]
    for r in table["rows"]:
        w = "" if r["method"] == "-" else ("equal" if r.get("weight") is None else f"{r['weight']:g}")
        lines.append(f"| {r['stage']} | {r['group']} | {r['method']} | {r['label']} | {w} | "
                     + " | ".join(cell(r["metrics"].get(k)) for k in keys) + " |")
    lines += ["", "| claim | best merge (weight) | objective: merge − mix | verdict |", "|---|---|---|---|"]
    for b in table["best"]:
        diff = Interval(**{k: (float("nan") if v is None else v) for k, v in b["difference"].items()})
        w = "equal" if b["weight"] is None else f"{b['weight']:g}"
        lines.append(f"| {b['claim']} | {b['method']} ({w}) | {diff.format()} | **{b['verdict']}** |")
    return "\n".join(lines)


def _mergekit_version() -> str:
    from importlib.metadata import version

    return version("mergekit")


if __name__ == "__main__":
    print(main(quick="--quick" in sys.argv))
