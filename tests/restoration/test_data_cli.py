"""Face loaders on real PNG/JPEG files, and bad input through the CLI: exit code 2, one line on stderr."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from poise.errors import UserError
from poise.restoration.data import FaceDataCfg, load_faces, load_lfw_faces, read_face

RECIPES = Path(__file__).resolve().parents[2] / "recipes"

SR = RECIPES / "restoration" / "sr-robust.toml"


def write_faces(root: Path, n: int = 8, size: tuple[int, int] = (40, 30)) -> None:
    rng = np.random.default_rng(0)
    (root / "a" / "b").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        arr = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
        sub = root / ("a" if i % 2 else "a/b")
        Image.fromarray(arr).save(sub / f"{i:03d}.{'png' if i % 3 else 'jpg'}")


def test_lfw_subset_is_the_embedded_faces():
    x = load_lfw_faces()
    assert x.shape == (100, 1, 25, 25) and x.min() >= 0 and x.max() <= 1
    d = load_faces(FaceDataCfg())
    assert d.test.shape[1:] == (1, 24, 24) and len(d.train) + len(d.val) + len(d.test) == 100
    assert d.lr_size == 12
    crops = d.train_batch(torch.arange(4), torch.Generator().manual_seed(0))
    assert crops.shape == (4, 1, 24, 24)


def test_folder_loader_reads_nested_png_and_jpeg_centre_cropped(tmp_path):
    write_faces(tmp_path)
    (tmp_path / "notes.txt").write_text("ignored: not an image extension")
    d = load_faces(
        FaceDataCfg(name="folder", root=tmp_path, hr_size=16, channels=3, val_frac=0.0, test_frac=0.25)
    )
    assert d.train.shape == (6, 3, 16, 16) and d.test.shape == (2, 3, 16, 16)
    one = read_face(tmp_path / "a" / "001.png", 30, 3)  # 40x30 -> centre 30x30, no resize
    ref = np.asarray(Image.open(tmp_path / "a" / "001.png"), dtype=np.float32)[:, 5:35] / 255
    np.testing.assert_allclose(one.permute(1, 2, 0).numpy(), ref)
    gray = read_face(tmp_path / "a" / "001.png", 16, 1)
    assert gray.shape == (1, 16, 16)


@pytest.mark.parametrize("case", ["empty", "not_image", "too_small", "cmyk", "missing"])
def test_bad_folders_are_user_errors(tmp_path, case):
    root = tmp_path / "faces"
    root.mkdir()
    if case == "not_image":
        write_faces(root)
        (root / "broken.png").write_bytes(b"this is not a PNG")
        match = "not an image file"
    elif case == "too_small":
        write_faces(root, size=(10, 12))
        match = "expected at least 24x24"
    elif case == "cmyk":
        Image.new("CMYK", (30, 30)).save(root / "x.jpg")
        match = "4 channels"
    elif case == "missing":
        root = tmp_path / "nowhere"
        match = "no such folder"
    else:
        match = "no images in this folder"
    with pytest.raises(UserError, match=match):
        load_faces(FaceDataCfg(name="folder", root=root))


def _one_line_error(cli, *args: str) -> str:
    code, _, err = cli(*args)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_cli_bad_inputs_are_one_line_exit_2(cli, tmp_path):
    root = tmp_path / "faces"
    root.mkdir()
    line = _one_line_error(cli, "run", SR, "--set", "data.name=folder", "--set", f"data.root={root}")
    assert "no images in this folder" in line and str(root) in line
    write_faces(root)
    (root / "zz.png").write_text("not an image")
    line = _one_line_error(
        cli, "run", SR, "--set", "data.name=folder", "--set", f"data.root={root}", "--set", "degrade.gan="
    )
    assert "not an image file" in line and "zz.png" in line
    line = _one_line_error(cli, "run", SR, "--set", 'degrade.families=["smudge"]')
    assert "degrade.families" in line and "unknown degradation 'smudge'" in line
    line = _one_line_error(cli, "run", SR, "--set", 'degrade.families=["motion_blur"]')
    assert "held out for evaluation" in line
    line = _one_line_error(cli, "run", SR, "--set", "data.hr_size=25")
    assert "not divisible by scale 2" in line
    line = _one_line_error(cli, "run", SR, "--set", "data.channels=4")
    assert "data.channels" in line
    bad_eval = tmp_path / "bad-eval.toml"
    bad_eval.write_text(SR.read_text() + '\n[[eval]]\nname = "restoration.held_out"\nfamilies = ["fog"]\n')
    line = _one_line_error(cli, "run", bad_eval)
    assert "unknown degradation 'fog'" in line and "eval[" in line
    line = _one_line_error(
        cli, "run", SR, "--set", "loss.pixel=0", "--set", "loss.adversarial=0", "--set", "loss.sinkhorn=0"
    )
    assert "every loss weight is 0" in line
    line = _one_line_error(
        cli, "run", SR, "--set", "sinkhorn.clean_term=false", "--set", "sinkhorn.degraded_term=false"
    )
    assert "sinkhorn.clean_term and sinkhorn.degraded_term are both false" in line
    line = _one_line_error(cli, "run", SR, "--set", "degrade.gan_input=lr")
    assert "degrade.gan_input" in line
