"""CIFAR-10-C / CIFAR-100-C read from tiny .npy files in the real layout: per-cell accuracy equals a direct
computation, the means are the means, labels in either length, and bad input gives one line."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from poise.vision.corruptions import BENCHMARK, corruption_grid, load_corruption, load_labels
from poise.vision.evaluators import accuracy
from poise.vision.models import build_classifier
from tests.vision.test_data import write_cifar
from tests.vision.test_kinds import _one_line_error, _runs

N = 6  # images per severity (the real files have 10,000)


def write_cifar_c(root: Path, corruptions=("fog", "snow"), n: int = N, repeat_labels: bool = True,
                  classes: int = 10) -> np.ndarray:
    """``<corruption>.npy`` of uint8 (5·n, 32, 32, 3), severities 1–5 stacked, and ``labels.npy``."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    labels = rng.integers(0, classes, n).astype(np.uint8)  # the real file is uint8
    np.save(root / "labels.npy", np.tile(labels, 5) if repeat_labels else labels)
    for c in corruptions:
        np.save(root / f"{c}.npy", rng.integers(0, 256, (5 * n, 32, 32, 3), dtype=np.uint8))
    return labels


@pytest.fixture
def cifar_model():
    torch.manual_seed(0)
    return build_classifier("small_cnn", num_classes=10, input_shape=(3, 32, 32), mean=(0.5,) * 3, std=(0.25,) * 3,
                            width=4).eval()


@pytest.mark.parametrize("repeat_labels", [True, False])
def test_grid_matches_direct_computation(tmp_path, cifar_model, repeat_labels):
    labels = write_cifar_c(tmp_path / "c", repeat_labels=repeat_labels)
    grid = corruption_grid(cifar_model, tmp_path / "c", ["fog", "snow"], [1, 3, 5], n=4, device=torch.device("cpu"))
    assert set(grid) == {(c, s) for c in ("fog", "snow") for s in (1, 3, 5)}
    for (c, s), acc in grid.items():
        imgs = np.load(tmp_path / "c" / f"{c}.npy")[(s - 1) * N : (s - 1) * N + 4]  # rows of severity s
        x = torch.from_numpy(imgs.transpose(0, 3, 1, 2).copy())
        assert acc == accuracy(cifar_model, x, torch.from_numpy(labels[:4].astype(np.int64)), torch.device("cpu"))
    x, y = load_corruption(tmp_path / "c", "snow", 2, None, load_labels(tmp_path / "c"))
    assert x.shape == (N, 3, 32, 32) and x.dtype == torch.uint8 and y.tolist() == labels.tolist()


def _recipe(tmp_path: Path, entry: str) -> Path:
    """A one-step ERM run on tiny CIFAR-10 files, scored on clean data and by ``vision.corruptions``."""
    write_cifar(tmp_path / "c10")
    p = tmp_path / "r.toml"
    p.write_text(f"""kind = "vision.erm"
[model]
name = "small_cnn"
width = 4
[data]
name = "cifar10"
root = "{tmp_path / 'c10'}"
[train]
budget = {{ steps = 1 }}
[[eval]]
name = "vision.clean_accuracy"
[[eval]]
name = "vision.corruptions"
root = "{tmp_path / 'cc'}"
{entry}
""")
    return p


def test_evaluator_in_a_recipe(cli, tmp_path):
    write_cifar_c(tmp_path / "cc", corruptions=("fog", "snow", "contrast"))
    entry = 'corruptions = ["fog", "snow", "contrast"]\nseverities = [5, 1]\nn = 5'
    code, _, err = cli("run", _recipe(tmp_path, entry))
    assert code == 0, err
    ((run, m),) = _runs(tmp_path / ".poise")
    cells = {k: v.value for k, v in m.items() if re.fullmatch(r"robustness\.corruption_acc_[a-z_]+_s\d", k)}
    assert len(cells) == 6 and m["robustness.corruption_acc"].axis == "robustness"
    assert m["robustness.corruption_acc"].value == pytest.approx(np.mean(list(cells.values())))
    assert m["robustness.corruption_acc_fog"].value == pytest.approx(
        (cells["robustness.corruption_acc_fog_s1"] + cells["robustness.corruption_acc_fog_s5"]) / 2)
    assert m["robustness.corruption_acc_s5"].value == pytest.approx(
        np.mean([cells[f"robustness.corruption_acc_{c}_s5"] for c in ("fog", "snow", "contrast")]))
    # the report: a corruption × severity table and heatmap; the defences table keeps only the mean
    from poise.report import report_sections
    from poise.store import Store

    s = Store(root=tmp_path / ".poise")
    sections = report_sections()
    table, heat = sections["vision.corruptions"][1](s, s.list_runs())
    headers, rows = sections["vision.defences"][1](s, s.list_runs())[0].table
    s.close()
    assert [r[2] for r in table.table[1]] == ["snow", "fog", "contrast", "mean"]  # benchmark order, then the mean
    assert table.table[1][-1][-1] == f"{m['robustness.corruption_acc'].value:.3f}"
    row = table.table[1][0]
    assert row[3] != "" and row[4] == row[5] == row[6] == "" and row[7] != ""  # severities 1 and 5 only
    assert heat.figure.data[0].z is not None and len(heat.figure.data[0].y) == 3
    assert "corruption_acc" in headers and not any(h.startswith("corruption_acc_") for h in headers)


def test_default_corruptions_are_the_benchmark_fifteen():
    from poise.vision.corruptions import CorruptionParams

    p = CorruptionParams(root=Path("x"))
    assert p.corruptions == list(BENCHMARK) and len(BENCHMARK) == 15 and p.severities == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    "prepare,sets,needles",
    [
        (lambda r: write_cifar_c(r), 'corruptions = ["fog", "rain"]', ("r.toml", "eval", "unknown corruption 'rain'")),
        (lambda r: write_cifar_c(r), 'corruptions = ["fog", "frost"]', ("frost.npy", "no file")),
        (lambda r: (write_cifar_c(r), (r / "labels.npy").unlink()), 'corruptions = ["fog"]', ("labels.npy", "no file")),
        (lambda r: (write_cifar_c(r), np.save(r / "fog.npy", np.zeros((12, 32, 32), np.uint8))),
         'corruptions = ["fog"]', ("fog.npy", "shape (5·N, H, W, 3)")),
        (lambda r: (write_cifar_c(r), np.save(r / "labels.npy", np.zeros((6, 2), np.int64))),
         'corruptions = ["fog"]', ("labels.npy", "shape (N,)")),
        (lambda r: (write_cifar_c(r), np.save(r / "labels.npy", np.zeros(7, np.int64))),
         'corruptions = ["fog"]', ("labels.npy", "7 labels")),
        (lambda r: write_cifar_c(r, classes=100), 'corruptions = ["fog"]', ("labels.npy", "10 classes")),
        (lambda r: (write_cifar_c(r), (r / "fog.npy").write_bytes(b"junk")), 'corruptions = ["fog"]',
         ("fog.npy", "cannot read")),
        (lambda r: None, 'corruptions = ["fog"]', ("no folder",)),
        (lambda r: write_cifar_c(r), "severities = [0, 6]", ("r.toml", "severities")),
    ],
)
def test_bad_corruption_input_one_line(cli, tmp_path, prepare, sets, needles):
    prepare(tmp_path / "cc")
    code, _, err = cli("run", _recipe(tmp_path, sets + "\nn = 2"))
    _one_line_error(code, err, *needles)
