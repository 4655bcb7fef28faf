"""benchmarks/gpu_check.py: one clear line without CUDA; its synthetic CIFAR-10 is read by poise's loader."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

from ..conftest import REPO

SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def test_without_cuda_it_says_so_in_one_line():
    import torch

    if torch.cuda.is_available():  # on a GPU machine the script runs for real; here only the CPU path
        return
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(REPO / "src")))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "gpu_check: error: no CUDA device (torch.cuda.is_available() is False); run it on a machine with an NVIDIA GPU"]


def test_synthetic_cifar10_is_read_by_the_real_loader(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    root = mod.write_synthetic_cifar10(tmp_path, n_train=100, n_test=20)
    from poise.vision.data import VisionDataCfg, load_vision_data

    data = load_vision_data(VisionDataCfg(name="cifar10", root=str(root)), seed=0)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10
    assert len(data.train[0]) + len(data.val[0]) == 100 and len(data.test[0]) == 20
    from poise.recipes import read_toml, shipped_recipes_root
    from poise.registry import load_all_kinds

    assert set(mod.RECIPES) == set(load_all_kinds())  # every kind, each with a shipped recipe of that kind
    for kind, recipe in mod.RECIPES.items():
        assert recipe is None or read_toml(shipped_recipes_root() / recipe)["kind"] == kind
    n = mod.BIG_LM
    params = n["num_layers"] * (2 * n["hidden_size"] ** 2 + 2 * n["hidden_size"] * n["hidden_size"] // n["num_heads"]
                                * n["num_kv_heads"] + 3 * n["hidden_size"] * n["intermediate_size"])
    assert 0.45e9 < params < 0.55e9  # the "~0.5B" language model
