"""GPU check of the language lab's CUDA path: SFT, DPO and AlphaAlign (GRPO) on a random-weight ~0.5B model.

    python benchmarks/gpu_language.py [--steps 20] [--out gpu-language.md]

Builds a Qwen2-architecture causal LM with random weights (Qwen2-0.5B's width: hidden 896, MLP 4864, 14 heads,
2 KV heads; 32 layers, so that with a byte-level BPE trained on the safety world's English and French text it
holds about 0.48B parameters), saves it as a local HF folder with Qwen2's chat template, and runs the shipped
recipes ``language/sft.toml``, ``language/dpo.toml`` and ``language/alphaalign-grpo.toml`` on it
(``model.path``, ``device = "cuda"``, no evaluation) through poise's runner. Per method it records the steps,
the run's wall time, peak GPU memory and tokens per second: for SFT and DPO, TRL's count of tokens the trainer
processed over the run's wall time (model loading included: a lower bound on the step rate); for GRPO,
completion tokens generated per step over the step's time (generation, reward and update).

Without a CUDA device it prints one line and exits with code 2: nothing runs on a CPU.
``check(folder, device, ...)`` is the same sequence for any model folder and device (a CPU dry run in the tests).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("POISE_COUNTRY", "FRA")

QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
    "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n'"
    " }}{% endif %}"
)
HALF_B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=32, num_attention_heads=14,
              num_key_value_heads=2, max_position_embeddings=1024)


def build_model(folder: Path, shape: dict[str, int] | None = None, vocab_size: int = 8192, seed: int = 0) -> int:
    """Save a random-weight Qwen2 chat model (``shape``: HALF_B by default) with a world BPE; its parameter count."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from poise.language.base import tokenizer_corpus
    from poise.language.tokenizer import train_tokenizer
    from poise.language.world import WorldCfg, build_world

    tok = train_tokenizer(tokenizer_corpus(build_world(WorldCfg(languages=["en", "fr"]))), vocab_size,
                          special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                          config={"bos_token": None, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                                  "chat_template": QWEN2_TEMPLATE})
    config = Qwen2Config(vocab_size=len(tok), tie_word_embeddings=True, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.eos_token_id, **(shape or HALF_B))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(str(folder), safe_serialization=True)
    tok.save_pretrained(str(folder))
    return sum(p.numel() for p in model.parameters())


def _recipe(name: str, folder: Path, device: str, steps: int, overrides: dict[str, Any]) -> Any:
    from poise.recipes import load_recipe, shipped_recipes_root

    base = {"model.path": str(folder), "device": device, "train.budget.steps": steps, "eval": [],
            "data.world.languages": ["en", "fr"], "train.checkpoint_every": 10_000}
    return load_recipe(shipped_recipes_root() / "language" / name, {**base, **overrides})


def check(folder: Path, device: str = "cuda", steps: int = 20, store_root: Path | None = None) -> list[dict[str, Any]]:
    """Run SFT, DPO and GRPO on the model in ``folder``; one row per method (steps, seconds, tokens/s, memory)."""
    import torch

    from poise.runner import Runner
    from poise.store import Store
    from poise.ui import UI

    store = Store(root=store_root or Path(tempfile.mkdtemp(prefix="poise-gpu-")) / ".poise")
    runner = Runner(store, UI(quiet=True))
    cuda = device.startswith("cuda")
    plans = [
        ("SFT", "sft.toml", steps, {"train.batch_size": 8, "mix.max_examples": 512}),
        ("DPO", "dpo.toml", steps, {"train.batch_size": 4, "mix.max_examples": 512}),
        ("AlphaAlign (GRPO)", "alphaalign-grpo.toml", max(2, steps // 4),
         {"train.batch_size": 2, "n": 4, "grpo.max_new_tokens": 32}),
    ]
    rows = []
    for label, name, n_steps, overrides in plans:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        run = runner.run(_recipe(name, folder, device, n_steps, overrides))
        wall = time.perf_counter() - t0
        metrics = store.metrics([run.id])
        if name == "alphaalign-grpo.toml":
            n, per_prompt = overrides["n"], overrides["train.batch_size"]
            by_step: dict[int, dict[str, float]] = {}
            for m in metrics:
                by_step.setdefault(m.step, {})[m.name] = m.value
            done = [v for v in by_step.values() if "completion_length" in v and v.get("time_step")]
            tokens = sum(v["completion_length"] * n * per_prompt for v in done)
            seconds = sum(v["time_step"] for v in done)
            rate, what = (tokens / seconds if seconds else None), "completion tokens / step time"
        else:
            counted = [m for m in metrics if m.name == "num_tokens"]
            tokens = max((m.value for m in counted), default=0.0)
            rate, what = (tokens / wall if wall else None), "trained tokens / run wall time"
        rows.append({"method": label, "status": run.status, "steps": n_steps, "wall_s": wall, "tokens": tokens,
                     "tokens_per_s": rate, "rate_is": what,
                     "peak_gpu_gb": torch.cuda.max_memory_allocated() / 1e9 if cuda else None})
    return rows


def table(rows: list[dict[str, Any]], params: int, device_name: str) -> str:
    lines = [f"Random-weight Qwen2 model, {params / 1e9:.3f}B parameters, on {device_name}.", "",
             "| method | status | steps | wall s | tokens | tokens/s | measured as | peak GPU GB |",
             "|---|---|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        rate = f"{r['tokens_per_s']:.0f}" if r["tokens_per_s"] else "–"
        mem = f"{r['peak_gpu_gb']:.1f}" if r["peak_gpu_gb"] is not None else "–"
        lines.append(f"| {r['method']} | {r['status']} | {r['steps']} | {r['wall_s']:.1f} | {r['tokens']:.0f} | "
                     f"{rate} | {r['rate_is']} | {mem} |")
    return "\n".join(lines)


def language_gpu_check(steps: int = 20) -> str:
    """The check on a CUDA GPU, as a Markdown table; ``SystemExit(2)`` with one line when there is none."""
    import torch

    if not torch.cuda.is_available():
        print("gpu_language: error: no CUDA device; this check runs SFT, DPO and GRPO on a ~0.5B model and needs "
              "a GPU (nothing was run)", file=sys.stderr)
        raise SystemExit(2)
    with tempfile.TemporaryDirectory(prefix="poise-gpu-") as tmp:
        folder = Path(tmp) / "qwen2-0.5b-random"
        params = build_model(folder)
        rows = check(folder, "cuda", steps, Path(tmp) / ".poise")
        return table(rows, params, torch.cuda.get_device_name(0))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="SFT and DPO steps (GRPO: a quarter)")
    ap.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    args = ap.parse_args()
    text = language_gpu_check(args.steps)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
