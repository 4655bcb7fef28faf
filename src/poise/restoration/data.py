"""Face images for super-resolution as tensors in [0, 1]: scikit-image's LFW subset (embedded) or a folder.

HR images are ``hr_size``×``hr_size`` (default 24); the LR side is ``hr_size // scale``. The LFW subset
ships inside the scikit-image wheel (``skimage/data/lfw_subset.npy``, read straight from disk, never
fetched): 100 faces at 25×25, then 100 non-faces that are not used. Training faces keep all their
pixels so each step takes a random ``hr_size`` crop (plus a horizontal flip); validation and test
faces are the fixed centre crop. A local folder (CelebA, FFHQ, Helen layouts: any nesting, any size)
is centre-cropped to a square and resized down to ``hr_size`` (never up: smaller images are an error).

Splits come from ``data.split_seed``, not the run's seed, so every seed of a benchmark — and the
degradation GAN the runs share — sees the same test faces. The scikit-image sample photographs
(astronaut, camera, cat, coffee) give non-face patches for a generalisation check, validation patches
from the middle band of each photograph and test patches from its top and bottom bands.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import Field, model_validator

from poise.errors import UserError
from poise.recipes import DataCfg
from poise.threads import one_thread

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
PHOTOS = ("astronaut.png", "camera.png", "chelsea.png", "coffee.png")
LFW_FACES = 100  # the first 100 images of lfw_subset are faces, the next 100 are not


class FaceDataCfg(DataCfg):
    """Which faces: ``lfw_subset`` (embedded, gray 25×25) or ``folder`` (``root``: any size, gray or RGB)."""

    name: Literal["lfw_subset", "folder"] = "lfw_subset"
    hr_size: int = Field(24, ge=4, le=1024, description="side of the square HR image")
    scale: Literal[2, 3, 4] = Field(2, description="super-resolution factor; LR side = hr_size / scale")
    channels: Literal[1, 3] = Field(1, description="1 = gray (RGB files are converted to luma), 3 = RGB")
    split_seed: int = Field(0, description="seed of the train/val/test split (shared by every run seed)")
    val_frac: float = Field(0.1, ge=0.0, lt=0.5)
    test_frac: float = Field(0.3, gt=0.0, lt=0.9)
    limit: int | None = Field(None, gt=0, description="load at most this many images (folder, in name order)")
    eval_limit: int | None = Field(None, gt=0, description="evaluate on at most this many test images")

    @model_validator(mode="after")
    def _consistent(self) -> FaceDataCfg:
        if self.hr_size % self.scale:
            raise ValueError(
                f"hr_size {self.hr_size} is not divisible by scale {self.scale}; "
                f"expected a multiple of {self.scale}"
            )
        if self.name == "lfw_subset" and self.hr_size > 25:
            raise ValueError(f"lfw_subset faces are 25x25; expected hr_size <= 25 (got {self.hr_size})")
        if self.name == "folder" and self.root is None:
            raise ValueError("data.name = 'folder' needs data.root, the folder of face images")
        return self

    def preflight(self) -> None:
        """A face folder exists and holds images before a run starts."""
        if self.name == "folder" and self.root is not None:
            list_images(Path(self.root).expanduser())


@dataclass
class FaceData:
    """HR face tensors ``[N, C, H, W]`` in [0, 1] and the SR geometry they are used at."""

    name: str
    train: torch.Tensor  # crop pool: each side >= hr_size
    val: torch.Tensor
    test: torch.Tensor
    scale: int
    hr_size: int
    channels: int
    _photos: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def lr_size(self) -> int:
        return self.hr_size // self.scale

    def split(self, name: str) -> torch.Tensor:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def train_batch(self, idx: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """HR training batch: a random ``hr_size`` crop of each image and a random horizontal flip."""
        x = self.train[idx]
        b, _, p, _ = x.shape
        span = p - self.hr_size + 1
        oy = torch.randint(0, span, (b,), generator=g)
        ox = torch.randint(0, span, (b,), generator=g)
        i = torch.arange(self.hr_size)
        rows, cols = (oy[:, None] + i), (ox[:, None] + i)
        out = x.permute(0, 2, 3, 1)[torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
        out = out.permute(0, 3, 1, 2)
        flip = torch.rand(b, generator=g) < 0.5
        return torch.where(flip[:, None, None, None], out.flip(-1), out).contiguous()

    def photos(self, split: str = "test") -> torch.Tensor:
        """Non-face HR patches from scikit-image's sample photographs (cached): the validation split's
        patches and the test split's come from disjoint bands of each photograph."""
        if split not in self._photos:
            key = "val" if split == "val" else "test"
            self._photos[split] = photo_patches(self.hr_size, self.channels, split=key)
        return self._photos[split]


def small_image_threads(device: torch.device, hr_size: int) -> AbstractContextManager[None]:
    """One torch thread for small faces (HR side ≤ 64) on the CPU: their convolutions are too small to
    split (see :mod:`poise.threads`); nothing changes on a GPU or for larger faces."""
    return one_thread(device.type == "cpu" and hr_size <= 64)


# --------------------------------------------------------------------------- reading images


def _skimage_data_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).resolve().parent


def _to_tensor(img: object, channels: int) -> torch.Tensor:
    """PIL image (mode L or RGB) → ``[C, H, W]`` float in [0, 1] with the recipe's channel count."""
    from PIL import Image

    assert isinstance(img, Image.Image)
    if channels == 1 and img.mode != "L":
        img = img.convert("L")  # ITU-R 601-2 luma
    if channels == 3 and img.mode != "RGB":
        img = img.convert("RGB")
    arr = np.asarray(img, dtype=np.float32) / 255.0
    t = torch.from_numpy(arr.copy())
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)


def read_face(path: Path, hr_size: int, channels: int) -> torch.Tensor:
    """One image file → ``[C, hr, hr]``: centre square crop, area-style resize down, channel conversion."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            img = im.copy()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise UserError("not an image file (cannot be decoded as PNG/JPEG/...)", where=path) from None
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode == "1":
        img = img.convert("L")
    bands = img.getbands()
    if len(bands) not in (1, 3):
        raise UserError(
            f"image has {len(bands)} channels ({img.mode}); expected 1 (gray) or 3 (RGB)", where=path
        )
    if len(bands) == 1 and img.mode != "L":
        img = img.convert("L")
    elif len(bands) == 3 and img.mode != "RGB":
        img = img.convert("RGB")
    w, h = img.size
    if min(w, h) < hr_size:
        raise UserError(
            f"image is {w}x{h}; expected at least {hr_size}x{hr_size} pixels (faces are "
            "centre-cropped and resized down to data.hr_size, never up)",
            where=path,
        )
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if side != hr_size:
        img = img.resize((hr_size, hr_size), Image.Resampling.BICUBIC, reducing_gap=None)
    return _to_tensor(img, channels)


def list_images(root: Path) -> list[Path]:
    """Image files under ``root`` (recursively, hidden files skipped), sorted by path."""
    if not root.exists():
        raise UserError("no such folder", where=root, field="data.root")
    if not root.is_dir():
        raise UserError("expected a folder of face images, got a file", where=root, field="data.root")
    files = sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_EXTS
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise UserError(
            f"no images in this folder (expected files ending in {', '.join(IMAGE_EXTS)})",
            where=root,
            field="data.root",
        )
    return files


def load_folder(cfg: FaceDataCfg) -> torch.Tensor:
    """Every image of ``cfg.root`` (up to ``cfg.limit``) as ``[N, C, hr, hr]``."""
    assert cfg.root is not None
    files = list_images(Path(cfg.root))
    if cfg.limit is not None:
        files = files[: cfg.limit]
    return torch.stack([read_face(f, cfg.hr_size, cfg.channels) for f in files])


def load_lfw_faces(channels: int = 1) -> torch.Tensor:
    """The 100 LFW faces shipped with scikit-image as ``[100, C, 25, 25]`` (gray, replicated for RGB)."""
    path = _skimage_data_dir() / "lfw_subset.npy"
    if path.is_file():
        arr = np.load(path, allow_pickle=False)
    else:  # a scikit-image build without the bundled file: its own (cached) fetcher
        from skimage import data

        arr = data.lfw_subset()
    arr = np.asarray(arr[:LFW_FACES], dtype=np.float32)
    if arr.max() > 1.0:
        arr = arr / 255.0
    x = torch.from_numpy(arr).unsqueeze(1)
    return x.repeat(1, channels, 1, 1) if channels == 3 else x


def photo_patch_origins(height: int, width: int, hr_size: int, per_photo: int = 8,
                        split: str = "test") -> list[tuple[int, int]]:
    """Top-left corners of the ``per_photo`` patches of one resized photograph (short side 6·hr_size).

    Test patches lie in the top and bottom bands (rows ``[0, hr)`` and ``[H - hr, H)``); validation
    patches lie in the middle band, at least ``hr // 2`` rows away from both (more than the resize's
    bicubic support), so no pixel of a test patch is scored by a tuning run. ``per_photo // 2`` columns
    evenly spaced across the width, on two rows, for both splits.
    """
    if split == "test":
        ys = np.linspace(0, height - hr_size, 2)
    else:
        gap = max(hr_size // 2, 2)
        ys = np.linspace(hr_size + gap, height - 2 * hr_size - gap, 2)
    xs = np.linspace(0, width - hr_size, per_photo // 2)
    return [(int(y), int(x)) for y in ys.round() for x in xs.round()]


def photo_patches(hr_size: int, channels: int, per_photo: int = 8, split: str = "test") -> torch.Tensor:
    """Non-face ``hr_size`` patches: each sample photograph is resized so its short side is 6·hr_size and
    ``per_photo`` patches are taken on an even grid (deterministic). Validation and test patches come
    from disjoint bands of each photograph (:func:`photo_patch_origins`), so tuning never sees test pixels."""
    from PIL import Image

    out = []
    for name in PHOTOS:
        path = _skimage_data_dir() / name
        if path.is_file():
            img = Image.open(path)
            img.load()
        else:
            from skimage import data

            img = Image.fromarray(getattr(data, path.stem)())
        w, h = img.size
        f = 6 * hr_size / min(w, h)
        img = img.resize((max(hr_size, round(w * f)), max(hr_size, round(h * f))), Image.Resampling.BICUBIC)
        t = _to_tensor(img.convert("RGB") if img.mode not in ("L", "RGB") else img, channels)
        _, H, W = t.shape
        out += [t[:, y : y + hr_size, x : x + hr_size] for y, x in photo_patch_origins(H, W, hr_size, per_photo, split)]
    return torch.stack(out)


# --------------------------------------------------------------------------- splits


def _split(n: int, cfg: FaceDataCfg, where: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n_test = max(1, round(n * cfg.test_frac))
    n_val = round(n * cfg.val_frac)
    if n - n_test - n_val < 1:
        raise UserError(
            f"only {n} image(s); expected at least {n_test + n_val + 1} to make train, "
            "validation and test splits",
            where=where,
            field="data.root",
        )
    perm = np.random.default_rng(cfg.split_seed).permutation(n)
    test, val, train = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
    return np.sort(train), np.sort(val), np.sort(test)


def _centre(x: torch.Tensor, size: int) -> torch.Tensor:
    o = (x.shape[-1] - size) // 2
    return x[..., o : o + size, o : o + size].contiguous()


def load_faces(cfg: FaceDataCfg) -> FaceData:
    """The recipe's faces, split into a training crop pool and fixed-crop validation and test sets."""
    if cfg.name == "lfw_subset":
        x, where = load_lfw_faces(cfg.channels), "lfw_subset"
    else:
        x, where = load_folder(cfg), str(cfg.root)
    tr, va, te = _split(len(x), cfg, where)
    test = _centre(x[te], cfg.hr_size)
    if cfg.eval_limit is not None:
        test = test[: cfg.eval_limit]
    return FaceData(
        cfg.name, x[tr].contiguous(), _centre(x[va], cfg.hr_size), test, cfg.scale, cfg.hr_size, cfg.channels
    )
