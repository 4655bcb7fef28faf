"""Cross-check against mergekit on tiny Hugging Face Llama models written by the test (fp32, CPU).

Linear, SLERP, NuSLERP, task arithmetic, TIES, breadcrumbs and Model Stock must equal mergekit's output
to 1e-5. DELLA draws random masks: with both tools' uniform draws replaced by the same deterministic
sequence (poise's mask stream, torch's Bernoulli in mergekit) it must equal mergekit to 1e-5 too, so
the keep probabilities, the rescaling and the sign election are all checked. DARE draws its masks
from another generator (NumPy's PCG64 here, torch's Bernoulli in mergekit) and rescales differently
(1/density here, the L1 norm there), so the two can only agree in distribution: for each tool we
check that every entry of the merge is either the base or the base plus the weighted task vector
rescaled by 1/density, that the share kept is the density (binomial bounds), and that for DARE-linear
the average over seeds converges to plain task arithmetic.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"

pytest.importorskip("mergekit")

from poise.merging import merge_files  # noqa: E402


def write_llama(
    path: Path, seed: int, *, layers: int = 2, hidden: int = 32, shard: str | None = None
) -> Path:
    import torch
    import transformers

    cfg = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():  # HF zero-initialises norms to 1 and biases: perturb so every tensor differs
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model.save_pretrained(path, max_shard_size=shard or "5GB")
    return path


@pytest.fixture(scope="module")
def llamas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("llamas")
    return {
        "base": write_llama(root / "base", 0),
        "a": write_llama(root / "a", 1),
        "b": write_llama(root / "b", 2),
        "c": write_llama(root / "c", 3),
    }


def load(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    out: dict[str, np.ndarray] = {}
    for f in [folder] if folder.is_file() else sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def run_mergekit(config: dict, out: Path, seed: int | None = None) -> dict[str, np.ndarray]:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    run_merge(
        MergeConfiguration.model_validate({**config, "dtype": "float32"}),
        str(out),
        MergeOptions(
            copy_tokenizer=False, quiet=True, lazy_unpickle=False, write_model_card=False, random_seed=seed
        ),
    )
    return load(out)


def mk_models(llamas: dict[str, Path], names: list[str], params: list[dict]) -> list[dict]:
    return [{"model": str(llamas[n]), "parameters": p} for n, p in zip(names, params, strict=True)]


CASES = {
    "linear": (
        {"merge_method": "linear", "models": "ab", "params": [{"weight": 0.7}, {"weight": 0.3}]},
        {"method": "linear", "weights": [0.7, 0.3]},
    ),
    "slerp": (
        {
            "merge_method": "slerp",
            "base_model": "a",
            "models": "ab",
            "params": [{}, {}],
            "parameters": {"t": 0.35},
        },
        {"method": "slerp", "t": 0.35},
    ),
    "task_arithmetic": (
        {
            "merge_method": "task_arithmetic",
            "base_model": "base",
            "models": "ab",
            "params": [{"weight": 0.8}, {"weight": 0.5}],
            "parameters": {"lambda": 1.3},
        },
        {"method": "task_arithmetic", "weights": [0.8, 0.5], "scale": 1.3, "base": True},
    ),
    "ties": (
        {
            "merge_method": "ties",
            "base_model": "base",
            "models": "ab",
            "params": [{"weight": 0.6, "density": 0.4}, {"weight": 0.4, "density": 0.4}],
        },
        {"method": "ties", "weights": [0.6, 0.4], "density": 0.4, "base": True},
    ),
    "ties_unnormalized": (
        {
            "merge_method": "ties",
            "base_model": "base",
            "models": "ab",
            "params": [{"weight": 1.0, "density": 0.7}, {"weight": 0.5, "density": 0.7}],
            "parameters": {"normalize": False},
        },
        {"method": "ties", "weights": [1.0, 0.5], "density": 0.7, "normalize": False, "base": True},
    ),
    "nuslerp": (
        {"merge_method": "nuslerp", "models": "ab", "params": [{"weight": 0.3}, {"weight": 0.9}]},
        {"method": "nuslerp", "weights": [0.3, 0.9]},
    ),
    "nuslerp_base": (
        {"merge_method": "nuslerp", "base_model": "base", "models": "ab",
         "params": [{"weight": 0.6}, {"weight": 0.4}]},
        {"method": "nuslerp", "weights": [0.6, 0.4], "base": True},
    ),
    "nuslerp_rows": (
        {"merge_method": "nuslerp", "base_model": "base", "models": "ab",
         "params": [{"weight": 0.6}, {"weight": 0.4}], "parameters": {"nuslerp_flatten": False}},
        {"method": "nuslerp", "weights": [0.6, 0.4], "nuslerp_flatten": False, "base": True},
    ),
    "nuslerp_columns": (
        {"merge_method": "nuslerp", "models": "ab", "params": [{"weight": 1.0}, {"weight": 2.0}],
         "parameters": {"nuslerp_flatten": False, "nuslerp_row_wise": True}},
        {"method": "nuslerp", "weights": [1.0, 2.0], "nuslerp_flatten": False, "nuslerp_row_wise": True},
    ),
    "breadcrumbs": (
        {"merge_method": "breadcrumbs", "base_model": "base", "models": "ab",
         "params": [{"weight": 0.7, "density": 0.6, "gamma": 0.05}, {"weight": 0.5, "density": 0.6, "gamma": 0.05}]},
        {"method": "breadcrumbs", "weights": [0.7, 0.5], "density": 0.6, "gamma": 0.05, "base": True},
    ),
    "breadcrumbs_small_gamma": (  # int(gamma * n) is 0 for small tensors: only the smallest are dropped
        {"merge_method": "breadcrumbs", "base_model": "base", "models": "ab",
         "params": [{"weight": 1.0, "density": 0.5}, {"weight": 1.0, "density": 0.5}]},
        {"method": "breadcrumbs", "density": 0.5, "base": True},
    ),
    "breadcrumbs_ties": (
        {"merge_method": "breadcrumbs_ties", "base_model": "base", "models": "ab",
         "params": [{"weight": 0.6, "density": 0.4, "gamma": 0.1}, {"weight": 0.4, "density": 0.4, "gamma": 0.1}],
         "parameters": {"lambda": 0.8}},
        {"method": "breadcrumbs_ties", "weights": [0.6, 0.4], "density": 0.4, "gamma": 0.1, "scale": 0.8,
         "base": True},
    ),
    "model_stock": (
        {"merge_method": "model_stock", "base_model": "base", "models": "abc", "params": [{}, {}, {}]},
        {"method": "model_stock", "base": True, "third": True},
    ),
    "model_stock_filter_wise": (
        {"merge_method": "model_stock", "base_model": "base", "models": "abc", "params": [{}, {}, {}],
         "parameters": {"filter_wise": True}},
        {"method": "model_stock", "filter_wise": True, "base": True, "third": True},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_exact_methods_match_mergekit(case: str, llamas: dict[str, Path], tmp_path: Path):
    mk, ours = CASES[case]
    config = {k: v for k, v in mk.items() if k not in ("models", "params")}
    config["models"] = mk_models(llamas, list(mk["models"]), mk["params"])
    if "base_model" in config:
        config["base_model"] = str(llamas[config["base_model"]])
    theirs = run_mergekit(config, tmp_path / "mergekit")
    ours = dict(ours)
    base = llamas["base"] if ours.pop("base", False) else None
    sources = [llamas["a"], llamas["b"]] + ([llamas["c"]] if ours.pop("third", False) else [])
    merge_files(sources, tmp_path / "poise", base=base, **ours)
    mine = load(tmp_path / "poise")
    assert sorted(mine) == sorted(theirs)
    for k in theirs:
        assert mine[k].dtype == np.float32
        np.testing.assert_allclose(mine[k], theirs[k], rtol=1e-5, atol=1e-5, err_msg=k)
    assert (tmp_path / "poise" / "config.json").is_file()  # the reference folder's config travels with it


def _uniforms(n: int) -> np.ndarray:
    """A fixed, evenly spread sequence in [0, 1): the 'random' draws both tools see in the DELLA test."""
    return (np.arange(n, dtype=np.float64) * 0.6180339887498949 + 0.1234) % 1.0


class _Draws:
    """Stands in for a tensor's mask stream: the first entries of ``_uniforms``, in flat order."""

    def __init__(self, *_: object):
        self.pos = 0

    def random(self, n: int) -> np.ndarray:
        out = _uniforms(self.pos + n)[self.pos :]
        self.pos += n
        return out


@pytest.mark.parametrize("method", ["della", "della_linear"])
def test_della_equals_mergekit_with_the_same_draws(method, llamas, tmp_path, monkeypatch):
    import torch

    import poise.merging.kernels as kernels

    def bernoulli(probs: torch.Tensor) -> torch.Tensor:  # keep where u < p, u the shared sequence
        u = torch.from_numpy(_uniforms(probs.numel())).reshape(probs.shape)
        return (u < probs.double()).to(probs.dtype)

    weights, density, epsilon = [0.7, 0.4], 0.5, 0.2
    config = {
        "merge_method": method,
        "base_model": str(llamas["base"]),
        "models": mk_models(llamas, ["a", "b"], [{"weight": w, "density": density, "epsilon": epsilon}
                                                 for w in weights]),
    }
    with monkeypatch.context() as m:
        m.setattr(torch, "bernoulli", bernoulli)
        theirs = run_mergekit(config, tmp_path / "mergekit")
    monkeypatch.setattr(kernels, "dare_rng", _Draws)
    merge_files([llamas["a"], llamas["b"]], tmp_path / "poise", base=llamas["base"], method=method,
                weights=weights, density=density, epsilon=epsilon, chunk=1000)
    mine = load(tmp_path / "poise")
    assert sorted(mine) == sorted(theirs)
    base, a = load(llamas["base"]), load(llamas["a"])
    dropped = total = 0
    for k in theirs:
        np.testing.assert_allclose(mine[k], theirs[k], rtol=1e-5, atol=1e-5, err_msg=k)
        dropped += int(np.sum(mine[k] == base[k]))
        total += base[k].size
    assert dropped > 0.1 * total  # the masks did drop entries (the comparison is not of two task-arithmetic sums)
    assert not np.allclose(mine["model.layers.0.mlp.up_proj.weight"], a["model.layers.0.mlp.up_proj.weight"])


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties"])
def test_dare_matches_mergekit_in_distribution(method: str, llamas: dict[str, Path], tmp_path: Path):
    density = 0.4
    config = {
        "merge_method": method,
        "base_model": str(llamas["base"]),
        "models": mk_models(llamas, ["a"], [{"weight": 1.0, "density": density}]),
    }
    theirs = run_mergekit(config, tmp_path / "mergekit", seed=3)
    merge_files(
        [llamas["a"]], tmp_path / "poise", base=llamas["base"], method=method, density=density, seed=3
    )
    mine = load(tmp_path / "poise")
    base, model = load(llamas["base"]), load(llamas["a"])
    for label, merged in (("mergekit", theirs), ("poise", mine)):
        kept = total = 0
        for k, b in base.items():
            tau = model[k] - b
            delta = merged[k] - b
            is_kept = np.abs(delta) > np.abs(tau) * 0.5
            factor = 1 / density
            if label == "mergekit":
                factor = np.abs(tau).sum(dtype=np.float64) / np.abs(tau[is_kept]).sum(dtype=np.float64)
                if b.size >= 2000:  # ≈ 1/density (sd ≈ 4% at this size; small tensors are noisier)
                    assert abs(factor * density - 1) < 0.15, (k, factor)
            np.testing.assert_allclose(
                delta, np.where(is_kept, tau * factor, 0), rtol=1e-4, atol=1e-5, err_msg=f"{label} {k}"
            )
            kept += int(is_kept.sum())
            total += b.size
        share = kept / total
        assert abs(share - density) < 5 * np.sqrt(density * (1 - density) / total), (label, share)
    if method == "dare_linear":  # the mean over seeds tends to task arithmetic (the expectation of DARE)
        runs = [
            load(
                merge_files(
                    [llamas["a"]],
                    tmp_path / f"s{s}.safetensors",
                    base=llamas["base"],
                    method=method,
                    density=density,
                    seed=s,
                ).output
            )
            for s in range(30)
        ]
        k = "model.layers.0.mlp.down_proj.weight"
        mean = np.mean([r[k] for r in runs], axis=0)
        tau = model[k] - base[k]
        assert np.abs(mean - model[k]).mean() < 0.25 * np.abs(tau).mean()


def test_sharded_inputs_and_outputs_match_a_single_file_merge(llamas: dict[str, Path], tmp_path: Path):
    a = write_llama(tmp_path / "a_sharded", 1, shard="20KB")
    assert (a / "model.safetensors.index.json").is_file()
    whole = merge_files(
        [llamas["a"], llamas["b"]],
        tmp_path / "one.safetensors",
        base=llamas["base"],
        method="ties",
        density=0.5,
    )
    sharded = merge_files(
        [a, llamas["b"]],
        tmp_path / "sharded",
        base=llamas["base"],
        method="ties",
        density=0.5,
        max_shard_bytes=30_000,
        chunk=1000,
    )
    assert len(sharded.files) > 2 and (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    one, many = load(whole.output), load(tmp_path / "sharded")
    assert sorted(one) == sorted(many)
    for k in one:
        np.testing.assert_array_equal(one[k], many[k])
    import transformers  # the sharded output loads as a model

    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "sharded")
    assert model.config.num_hidden_layers == 2
