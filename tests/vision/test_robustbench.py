"""RobustBench models from a local folder in RobustBench's layout, built by the robustbench package itself:
the zoo's own definitions, tiny random models of its architectures, teachers, the baseline kind, the
model_info JSON, no network, and bad input."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from poise.errors import UserError
from poise.vision import robustbench_zoo as rb
from tests.vision.test_corruptions import write_cifar_c
from tests.vision.test_data import write_cifar
from tests.vision.test_kinds import RECIPES, TINY_EVAL, _one_line_error, _runs

TINY = "robustbench:cifar10/Linf/Tiny?root=models&arch=WideResNet&depth=10&widen_factor=1"


def save_tiny(root: Path, name: str = "Tiny", dataset: str = "cifar10", depth: int = 10, seed: int = 0) -> Path:
    """A random WideResNet-10-1 of robustbench's own class, saved the way RobustBench checkpoints are
    (a ``state_dict`` wrapper around DataParallel ``module.`` keys) into ``<root>/<dataset>/Linf/<name>.pt``."""
    rb.zoo()  # robustbench's own __init__ does not import (see rb.zoo); its model definitions do
    from robustbench.model_zoo.architectures.wide_resnet import WideResNet

    torch.manual_seed(seed)
    net = WideResNet(depth=depth, widen_factor=1, num_classes=rb.DATASETS[dataset])
    path = root / dataset / "Linf" / f"{name}.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    return path


def test_parse_ref_and_layout(tmp_path):
    r = rb.parse_ref(f"robustbench:cifar100/L2/Foo?root={tmp_path}&arch=DMWideResNet&depth=16&width=2")
    assert (r.dataset, r.threat_model, r.name, r.arch, r.arch_kwargs) == ("cifar100", "L2", "Foo", "DMWideResNet",
                                                                          {"depth": 16, "width": 2})
    assert r.path == tmp_path / "cifar100" / "L2" / "Foo.pt"
    assert r.num_classes == 100 and r.input_shape == (3, 32, 32)
    assert rb.parse_ref("robustbench:cifar10/Linf/Standard").root == Path("models")
    for bad, needle in [("robustbench:cifar10/Standard", "malformed"), ("robustbench:svhn/Linf/X", "svhn"),
                        ("robustbench:cifar10/L1/X", "L1"), ("robustbench:cifar10/Linf/X?arch=VGG", "VGG"),
                        ("robustbench:cifar10/Linf/X?depth=10", "arch"), ("robustbench:cifar10/Linf/X?foo=1", "foo"),
                        ("robustbench:cifar10/Linf/X?arch=WideResNet&depth=-3", "depth")]:
        with pytest.raises(UserError, match=needle):
            rb.parse_ref(bad)


def test_zoo_model_loads_from_local_folder_without_network(tmp_path, no_network, monkeypatch):
    """The zoo's own ``Standard`` (WideResNet-28-10) with random weights, saved in RobustBench's layout, loads
    with its weights intact — with every connection refused and RobustBench's download helpers unimportable."""
    for mod in ("robustbench.utils", "robustbench.data", "robustbench.zenodo_download", "robustbench.eval", "gdown"):
        monkeypatch.setitem(sys.modules, mod, None)  # importing any of them now raises ImportError
    zoo = rb.zoo()
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    torch.manual_seed(1)
    net = zoo.model_dicts[BenchmarkDataset.cifar_10][ThreatModel.Linf]["Standard"]["model"]().eval()
    path = tmp_path / "cifar10" / "Linf" / "Standard.pt"
    path.parent.mkdir(parents=True)
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, path)
    clf, ref = rb.load_classifier(f"robustbench:cifar10/Linf/Standard?root={tmp_path}")
    assert ref.arch is None and type(clf.net) is type(net)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(clf(x), net(x))
    # a missing checkpoint is an error, never a download
    with pytest.raises(UserError, match="no checkpoint .*Carmon2019Unlabeled.pt"):
        rb.load_classifier(f"robustbench:cifar10/Linf/Carmon2019Unlabeled?root={tmp_path}")
    assert no_network == []


def test_offline_refuses_connections(no_network):
    import socket

    # the fixture stands behind: were offline() broken, it would refuse (and record) the attempt itself
    for call in (lambda: socket.create_connection(("192.0.2.1", 80), timeout=0.1),
                 lambda: socket.socket().connect(("192.0.2.1", 80))):
        with rb.offline(), pytest.raises(ConnectionRefusedError, match="never downloads"):
            call()
    assert no_network == []


def test_tiny_architecture_model_and_model_info(cli, tmp_path):
    """vision.robustbench end to end: a tiny robustbench WideResNet scored by the recipe's evaluators, stored as
    a classifier (a teacher by run id) and written in RobustBench's model_info format."""
    save_tiny(tmp_path / "models")
    write_cifar(tmp_path / "c10")
    (tmp_path / "rb.toml").write_text(f"""
kind = "vision.robustbench"
[model]
ref = "{TINY}"
[data]
name = "cifar10"
root = "c10"
[threat]
eps = "8/255"
[output]
model_info = "model_info"
link = "https://example.org/paper"
[[eval]]
name = "vision.clean_accuracy"
[[eval]]
name = "vision.robust_accuracy"
attack = "pgd"
steps = 2
[[eval]]
name = "vision.autoattack_ref"
steps = 2
n_targets = 1
square_queries = 5
[[eval]]
name = "vision.corruptions"
root = "c10c"
corruptions = ["fog"]
severities = [2]
""")
    write_cifar_c(tmp_path / "c10c", corruptions=("fog",))
    code, _, err = cli("run", tmp_path / "rb.toml")
    assert code == 0, err
    ((run, m),) = _runs(tmp_path / ".poise")
    assert run.kind == "vision.robustbench" and run.status == "done"
    info = json.loads((tmp_path / "model_info" / "cifar10" / "Linf" / "Tiny.json").read_text())
    assert list(info) == ["link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                          "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "footnote"]
    assert info["dataset"] == "cifar10" and info["eps"] == "8/255" and info["architecture"] == "WideResNet-10-1"
    assert info["clean_acc"] == str(round(m["utility.clean_acc"].value * 100, 2))
    assert info["autoattack_acc"] == str(round(m["robustness.autoattack_acc"].value * 100, 2))  # the reference's
    assert "corruptions_acc" not in info and "robustness.corruption_acc_fog_s2" in m  # Linf entry; cells logged
    assert info["link"] == "https://example.org/paper"
    from poise.store import Store

    s = Store(root=tmp_path / ".poise")
    assert json.loads(s.artifact(run.id, "robustbench").path.read_text()) == info
    tensors, meta = s.load_tensors(run.id, "model")
    s.close()
    assert meta["robustbench"]["arch"] == "WideResNet" and meta["num_classes"] == 10
    # the stored model is the checkpoint's: same outputs as the robustbench network itself
    clf, _ = rb.load_classifier(TINY.replace("root=models", f"root={tmp_path / 'models'}"))
    rebuilt = rb.classifier_from_meta(meta)
    rebuilt.load_state_dict(tensors)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), clf(x))
    # the stored run is a teacher like any other (run:<id>), and so is the ref itself
    for teacher in (f"run:{run.id}", TINY):
        code, _, err = cli("run", RECIPES / "ard-digits.toml", "--quick", "--set", "data.name=cifar10",
                           "--set", f"data.root={tmp_path / 'c10'}", "--set", "model.width=4",
                           "--set", f"model.teacher={teacher}", "--set", "train.budget.epochs=1",
                           "--set", "train.attack.steps=1", *TINY_EVAL)
        assert code == 0, err
    kinds = sorted(r.kind for r, _ in _runs(tmp_path / ".poise"))
    assert kinds == ["vision.ard", "vision.ard", "vision.robustbench"]  # no teacher was trained


def test_model_info_format():
    info = rb.model_info(dataset="cifar10", threat_model="L2", clean_acc=0.94781, eps=0.5, autoattack_acc=0.1234)
    assert info["eps"] == "0.5" and info["clean_acc"] == "94.78" and info["autoattack_acc"] == "12.34"
    c = rb.model_info(dataset="cifar100", threat_model="corruptions", clean_acc=0.5, corruptions_acc=0.41)
    assert c["corruptions_acc"] == "41.0" and "autoattack_acc" not in c and c["eps"] is None
    assert rb.eps_text(4 / 255, "Linf") == "4/255" and rb.eps_text(0.03, "Linf") == "0.03"
    assert rb.model_info_path("mi", "imagenet", "corruptions_3d", "X") == Path("mi/imagenet/corruptions/X.json")


def _rb_recipe(tmp_path: Path, ref: str, data: str = "cifar10") -> Path:
    write_cifar(tmp_path / data, data)
    p = tmp_path / "rb.toml"
    p.write_text(f'kind = "vision.robustbench"\n[model]\nref = "{ref}"\n[data]\nname = "{data}"\nroot = "{data}"\n'
                 '[[eval]]\nname = "vision.clean_accuracy"\n')
    return p


@pytest.mark.parametrize(
    "ref,needles",
    [
        ("robustbench:cifar10/Linf/Standard?root=empty", ("rb.toml: model.ref:", "no checkpoint", "Standard.pt",
                                                           "RobustBench's layout")),
        ("robustbench:cifar10/Linf/NotAZooModel?root=models", ("model.ref", "not in the installed RobustBench zoo")),
        ("robustbench:cifar10/Linf/Tiny?root=models&arch=WideResNet&depth=16&widen_factor=1",
         ("model.ref", "does not fit", "missing")),
        ("robustbench:cifar10/Linfinity/Tiny", ("model.ref", "Linfinity")),
        ("robustbench:cifar100/Linf/Tiny?root=models&arch=WideResNet&depth=10&widen_factor=1",
         ("model.ref", "100 classes")),
    ],
)
def test_bad_robustbench_input_one_line(cli, tmp_path, ref, needles):
    save_tiny(tmp_path / "models")
    save_tiny(tmp_path / "models", name="NotAZooModel")
    save_tiny(tmp_path / "models", dataset="cifar100")
    (tmp_path / "empty").mkdir()
    code, _, err = cli("run", _rb_recipe(tmp_path, ref))
    _one_line_error(code, err, *needles)


def test_bad_teacher_ref_one_line(cli, tmp_path):
    write_cifar(tmp_path / "c10")
    code, _, err = cli("run", RECIPES / "ard-digits.toml", "--quick", "--set", "data.name=cifar10",
                       "--set", f"data.root={tmp_path / 'c10'}",
                       "--set", f"model.teacher=robustbench:cifar10/Linf/Standard?root={tmp_path}")
    _one_line_error(code, err, "model.teacher", "no checkpoint", "Standard.pt")


def test_corrupt_checkpoint_one_line(cli, tmp_path):
    path = tmp_path / "models" / "cifar10" / "Linf" / "Tiny.pt"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    code, _, err = cli("run", _rb_recipe(tmp_path, TINY))
    _one_line_error(code, err, "model.ref", "cannot read checkpoint", "Tiny.pt")
