"""``restoration.photos``: a tuning run (``eval_split = "val"``) scores sample-photograph patches that share
no pixel with the test patches, and the test patches are those the evaluator always scored."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from poise.restoration.data import FaceData, photo_patch_origins, photo_patches
from poise.restoration.evaluators import photos


def _rows(origins: list[tuple[int, int]], hr: int) -> set[int]:
    return {y + i for y, _ in origins for i in range(hr)}


@pytest.mark.parametrize("hr", [4, 8, 16, 24, 32, 64])
@pytest.mark.parametrize(("short", "long"), [(0, 0), (0, 7), (5, 0)])
def test_val_and_test_patches_lie_in_disjoint_bands_apart_by_half_a_patch(hr, short, long):
    height, width = 6 * hr + short, 6 * hr + long + 3
    val, test = (photo_patch_origins(height, width, hr, 8, split) for split in ("val", "test"))
    assert len(val) == len(test) == 8
    for y, x in val + test:  # every patch lies inside the photograph
        assert 0 <= y <= height - hr and 0 <= x <= width - hr
    rows_val, rows_test = _rows(val, hr), _rows(test, hr)
    assert not rows_val & rows_test
    assert min(abs(a - b) for a in rows_val for b in rows_test) > max(hr // 2, 2)


def test_the_test_patches_are_the_old_grid_and_the_val_patches_share_no_pixel_with_them():
    hr = 24
    test, val = photo_patches(hr, 1), photo_patches(hr, 1, split="val")
    assert test.shape == val.shape == (32, 1, hr, hr)
    # the default (test) path is unchanged: the top and bottom rows of a 4-column grid, as before the split
    assert test.double().sum().item() == pytest.approx(8698.231593, abs=1e-4)
    flat_test, flat_val = test.flatten(1), val.flatten(1)
    assert not any(torch.equal(v, t) for v in flat_val for t in flat_test)
    assert torch.cdist(flat_val, flat_test).min() > 0.5


def test_a_tuning_run_scores_the_val_patches_and_a_final_run_the_test_patches():
    hr, scale = 16, 2
    data = FaceData("tiny", torch.zeros(0), torch.zeros(0), torch.zeros(0), scale, hr, 1)
    model = torch.nn.Upsample(scale_factor=scale, mode="nearest")
    ctx = SimpleNamespace(device=torch.device("cpu"))
    got = {split: photos(model, data, ctx, batch_size=64, split=split) for split in ("val", "test")}
    assert torch.equal(data.photos("test"), photo_patches(hr, 1))
    assert torch.equal(data.photos("val"), photo_patches(hr, 1, split="val"))
    assert got["val"]["psnr_y_photo"] != pytest.approx(got["test"]["psnr_y_photo"])
