"""Real loaders on tiny files written in each dataset's real on-disk format; models of the registry."""

from __future__ import annotations

import pickle
import struct

import numpy as np
import pytest
import torch

from poise.errors import UserError
from poise.vision.data import VisionDataCfg, load_vision_data
from poise.vision.models import build_classifier, model_names


def write_cifar(root, name="cifar10", n=6):
    rng = np.random.default_rng(0)
    folder, files, label_key, meta_file, meta = {
        "cifar10": (
            "cifar-10-batches-py",
            [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
            "labels",
            "batches.meta",
            {"label_names": [f"c{i}" for i in range(10)]},
        ),
        "cifar100": (
            "cifar-100-python",
            ["train", "test"],
            "fine_labels",
            "meta",
            {"fine_label_names": [f"c{i}" for i in range(100)]},
        ),
    }[name]
    d = root / folder
    d.mkdir(parents=True)
    k = 10 if name == "cifar10" else 100
    for f in files:
        entry = {
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            label_key: list(rng.integers(0, k, n)),
        }
        (d / f).write_bytes(pickle.dumps(entry))
    (d / meta_file).write_bytes(pickle.dumps(meta))


def write_mnist(root, n=7):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        imgs = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
            struct.pack(">4B3i", 0, 0, 8, 3, n, 28, 28) + imgs.tobytes()
        )
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">4Bi", 0, 0, 8, 1, n) + labels.tobytes()
        )


def write_svhn(root, n=5):
    from scipy.io import savemat

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        savemat(
            root / f"{split}_32x32.mat",
            {
                "X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                "y": rng.integers(1, 11, (n, 1)).astype(np.uint8),
            },
        )


@pytest.mark.parametrize(
    "name,writer,shape,classes,n_train",
    [
        ("cifar10", write_cifar, (3, 32, 32), 10, 30),
        ("cifar100", lambda r: write_cifar(r, "cifar100"), (3, 32, 32), 100, 6),
        ("mnist", write_mnist, (1, 28, 28), 10, 7),
        ("svhn", write_svhn, (3, 32, 32), 10, 5),
    ],
)
def test_torchvision_loaders_read_real_formats(tmp_path, name, writer, shape, classes, n_train):
    writer(tmp_path)
    data = load_vision_data(VisionDataCfg(name=name, root=tmp_path, val_frac=0.0), seed=0)
    assert data.input_shape == shape and data.num_classes == classes
    assert len(data.train[0]) == n_train and data.train[0].dtype == torch.uint8
    assert int(data.train[1].max()) < classes and int(data.train[1].min()) >= 0
    assert len(data.test[0]) > 0


def test_missing_files_are_a_user_error(tmp_path):
    with pytest.raises(UserError, match="missing"):
        load_vision_data(VisionDataCfg(name="cifar10", root=tmp_path), seed=0)
    with pytest.raises(UserError, match="data.root|local folder"):
        load_vision_data(VisionDataCfg(name="svhn"), seed=0)


def test_digits_splits_are_disjoint_and_seeded():
    a = load_vision_data(VisionDataCfg(), seed=0)
    b = load_vision_data(VisionDataCfg(), seed=0)
    assert torch.equal(a.train[0], b.train[0])
    assert len(a.train[0]) + len(a.val[0]) + len(a.test[0]) == 1797
    assert float(a.train[0].min()) >= 0.0 and float(a.train[0].max()) <= 1.0


@pytest.mark.parametrize("name", model_names())
def test_every_registered_model_classifies(name):
    small = {"wrn34_10": 1, "preact_resnet18": 8, "small_cnn": 8, "mlp": 16, "mobilenetv2": 25}
    shape = (1, 8, 8) if name in ("small_cnn", "mlp") else (3, 32, 32)
    m = build_classifier(
        name,
        num_classes=7,
        input_shape=shape,
        mean=[0.5] * shape[0],
        std=[0.25] * shape[0],
        width=small.get(name),
    )
    out = m.eval()(torch.rand(2, *shape))
    assert out.shape == (2, 7) and torch.isfinite(out).all()


def test_digits_read_from_the_shipped_csv_equal_scikit_learns_loader():
    import numpy as np
    from sklearn.datasets import load_digits

    from poise.vision.data import digits_arrays

    images, target = digits_arrays()
    ref = load_digits()
    assert images.shape == (1797, 8, 8) and np.array_equal(images, ref.images)
    assert target.dtype.kind == "i" and np.array_equal(target, ref.target)
