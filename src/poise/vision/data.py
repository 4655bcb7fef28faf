"""Image classification data as tensors: scikit-learn's digits (embedded) or a torchvision set on disk.

* ``digits`` ships with scikit-learn (8×8, 1,797 images); splits are drawn from the recipe's seed
  (stratified, 60/20/20 train/val/test by default), so two runs with the same seed see the same examples.
* ``cifar10``, ``cifar100``, ``svhn`` and ``mnist`` are read by torchvision's own dataset classes from
  the local folder ``data.root`` (the folder torchvision calls ``root``); nothing is ever downloaded. The
  official test split is the test set; ``val_frac`` of the training split (drawn from the seed) is held
  out for validation. torchvision's md5 checks of the original archives are replaced by existence
  checks (the subclasses below only change that class data), so any file in the real on-disk format
  loads — tests write tiny ones.

Large sets are kept as uint8 (N, C, H, W) and turned into floats in [0, 1] per batch by :func:`as_float`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import Field, field_validator

from poise.errors import UserError
from poise.recipes import DataCfg

DATASETS = ("digits", "cifar10", "cifar100", "svhn", "mnist")

# channel means / stds of the training sets (the usual published values)
_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "mnist": ((0.1307,), (0.3081,)),
}


class VisionDataCfg(DataCfg):
    """Which dataset: ``digits`` (ships with scikit-learn) or a torchvision set read from ``root``."""

    name: str = "digits"
    val_frac: float = Field(
        0.2, ge=0.0, lt=1.0, description="share of the training data held out for validation"
    )
    test_frac: float = Field(0.2, gt=0.0, lt=1.0, description="digits only: share held out for testing")
    limit: int | None = Field(None, gt=0, description="keep at most this many training examples (quick runs)")
    augment: bool = Field(False, description="random crop (pad 4) and horizontal flip of training batches")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in DATASETS:
            raise ValueError(f"unknown dataset {v!r}; expected one of: {', '.join(DATASETS)}")
        return v

    def preflight(self) -> None:
        """A torchvision set's folder holds its files before a run starts."""
        if self.name != "digits":
            check_root(self)


@dataclass
class VisionData:
    name: str
    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    test: tuple[torch.Tensor, torch.Tensor]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train[0].shape[1:])

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def as_float(x: torch.Tensor) -> torch.Tensor:
    """Images as float32 in [0, 1] (uint8 storage is divided by 255)."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def augment_batch(x: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` and random horizontal flip (torch's global RNG)."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,)).tolist()
    dx = torch.randint(0, 2 * pad + 1, (n,)).tolist()
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    flip = torch.rand(n) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


def train_batch(
    data: VisionData, idx: torch.Tensor, cfg: VisionDataCfg, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training batch ``idx`` as float inputs in [0, 1] on ``device`` (augmented when asked)."""
    x, y = data.train
    xb = as_float(x[idx])
    if cfg.augment:
        xb = augment_batch(xb)
    return xb.to(device, non_blocking=True), y[idx].to(device, non_blocking=True)


# --------------------------------------------------------------------------- digits


def _stratified_split(y: np.ndarray, fracs: tuple[float, float], seed: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_val, n_test = round(len(idx) * fracs[0]), round(len(idx) * fracs[1])
        val.append(idx[:n_val])
        test.append(idx[n_val : n_val + n_test])
        train.append(idx[n_val + n_test :])
    return tuple(np.sort(np.concatenate(s)) for s in (train, val, test))


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8×8 digits (1,797 images, values 0–16) read from the CSV that ships inside
    scikit-learn, without importing ``sklearn.datasets`` (seconds of imports for one small file; a test
    checks the arrays equal ``sklearn.datasets.load_digits()``)."""
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # finds the package without running its imports
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the digits data ships with scikit-learn, which is not installed", where="data.name")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "digits.csv.gz"
    table = np.loadtxt(path, delimiter=",")
    return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)


def load_digits_data(cfg: VisionDataCfg, seed: int) -> VisionData:
    images, target = digits_arrays()
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(target, dtype=torch.long)
    tr, va, te = _stratified_split(target, (cfg.val_frac, cfg.test_frac), seed)
    if cfg.limit is not None:
        tr = tr[: cfg.limit]
    mean, std = (float(x.mean()),), (float(x.std()),)
    return VisionData("digits", (x[tr], y[tr]), (x[va], y[va]), (x[te], y[te]), 10, mean, std)


# --------------------------------------------------------------------------- torchvision sets


def _trusting(cls: type) -> type:
    """A subclass of a torchvision dataset whose md5 checks only check that each file exists."""
    attrs: dict[str, object] = {}
    for name in ("train_list", "test_list"):
        if hasattr(cls, name):
            attrs[name] = [[f, None] for f, _ in getattr(cls, name)]
    if hasattr(cls, "meta"):
        attrs["meta"] = {**cls.meta, "md5": None}
    if hasattr(cls, "split_list"):
        attrs["split_list"] = {k: [url, f, None] for k, (url, f, _) in cls.split_list.items()}
    return type(f"Local{cls.__name__}", (cls,), attrs)


def _expected_files(name: str) -> list[str]:
    from torchvision import datasets

    if name in ("cifar10", "cifar100"):
        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        return [f"{cls.base_folder}/{f}" for f, _ in cls.train_list + cls.test_list] + [
            f"{cls.base_folder}/{cls.meta['filename']}"
        ]
    if name == "svhn":
        return ["train_32x32.mat", "test_32x32.mat"]
    return [
        f"MNIST/raw/{p}-{k}-idx{d}-ubyte"
        for p in ("train", "t10k")
        for k, d in (("images", 3), ("labels", 1))
    ]


def _read_split(name: str, root: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision import datasets

    if name in ("cifar10", "cifar100"):
        ds = _trusting(datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100)(
            str(root), train=train, download=False
        )
        x = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
        return x, torch.tensor(ds.targets, dtype=torch.long)
    if name == "svhn":
        ds = _trusting(datasets.SVHN)(str(root), split="train" if train else "test", download=False)
        return torch.from_numpy(np.ascontiguousarray(ds.data)), torch.from_numpy(ds.labels.astype(np.int64))
    ds = datasets.MNIST(str(root), train=train, download=False)
    return ds.data.unsqueeze(1).contiguous(), ds.targets.long()


def check_root(cfg: VisionDataCfg) -> Path:
    """``data.root`` of a torchvision set, checked to hold its files in torchvision's layout."""
    if cfg.root is None:
        raise UserError(
            f"dataset {cfg.name!r} is read from a local folder; expected data.root (never downloaded)",
            field="data.root",
        )
    root = Path(cfg.root).expanduser()
    missing = [f for f in _expected_files(cfg.name) if not (root / f).is_file()]
    if missing:
        raise UserError(
            f"{root} has no {cfg.name} files in torchvision's layout; missing {', '.join(missing[:3])}"
            + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""),
            field="data.root",
        )
    return root


def load_torchvision_data(cfg: VisionDataCfg, seed: int) -> VisionData:
    root = check_root(cfg)
    try:
        x, y = _read_split(cfg.name, root, train=True)
        x_test, y_test = _read_split(cfg.name, root, train=False)
    except Exception as e:  # malformed files: say which set and folder, not a traceback
        raise UserError(
            f"could not read {cfg.name} from {root}: {type(e).__name__}: {e}", field="data.root"
        ) from None
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    n_val = round(len(x) * cfg.val_frac)
    va, tr = perm[:n_val].sort().values, perm[n_val:].sort().values
    if cfg.limit is not None:
        tr = tr[: cfg.limit]
    num_classes = {"cifar10": 10, "cifar100": 100, "svhn": 10, "mnist": 10}[cfg.name]
    mean, std = _STATS[cfg.name]
    return VisionData(cfg.name, (x[tr], y[tr]), (x[va], y[va]), (x_test, y_test), num_classes, mean, std)


def load_vision_data(cfg: VisionDataCfg, seed: int) -> VisionData:
    if cfg.name == "digits":
        return load_digits_data(cfg, seed)
    return load_torchvision_data(cfg, seed)
