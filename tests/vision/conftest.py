"""Vision test fixtures: a small CNN trained briefly on digits, shared by the attack tests."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

torch.set_num_threads(1)  # tiny models: threads only add contention on a shared machine


@pytest.fixture(scope="session")
def digits():
    from poise.vision.data import VisionDataCfg, load_digits_data

    return load_digits_data(VisionDataCfg(), seed=0)


@pytest.fixture(scope="session")
def trained_cnn(digits):
    """A small CNN trained for 150 steps on digits (about 90% clean accuracy), in eval mode."""
    from poise.batching import batch_indices
    from poise.vision.models import build_classifier

    torch.manual_seed(0)
    model = build_classifier(
        "small_cnn",
        num_classes=10,
        input_shape=digits.input_shape,
        mean=digits.mean,
        std=digits.std,
        width=16,
    )
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = digits.train
    for step in range(150):
        idx = batch_indices(step, len(x), 64, 0)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()
