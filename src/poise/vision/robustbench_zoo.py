"""RobustBench models from a local checkpoint folder, built with the ``robustbench`` package's own definitions.

A model is named by a **ref**::

    robustbench:<dataset>/<threat_model>/<model_name>[?root=DIR&arch=NAME&depth=D&widen_factor=W&width=W]

``dataset`` and ``threat_model`` are RobustBench's own names (``cifar10``, ``cifar100``, ``imagenet``;
``Linf``, ``L2``, ``corruptions``), and the checkpoint is read from RobustBench's layout
``<root>/<dataset>/<threat_model>/<model_name>.pt``. ``root`` defaults to ``$POISE_ROBUSTBENCH_ROOT``, else
``models`` in the working directory (RobustBench's own default ``model_dir``). A relative ``root`` given in
a recipe's ref is read next to the recipe file when such a folder exists there.

* Without ``arch`` the name must be in the installed RobustBench model zoo, and the zoo's constructor
  builds the network (``robustbench:cifar10/Linf/Standard`` is its WideResNet-28-10).
* With ``arch`` the checkpoint holds a network of one of RobustBench's architecture classes at a size of
  your choosing (your own model trained in RobustBench's architectures, or a zoo entry newer than the
  installed package): ``WideResNet`` (``depth``, ``widen_factor``), ``DMWideResNet`` (``depth``,
  ``width``) or ``DMPreActResNet`` (``depth``, ``width``); the ``DM`` models normalise with the dataset's
  mean and std inside, as in the zoo.

Nothing is downloaded, ever: RobustBench's ``load_model`` (which fetches missing checkpoints) and its
download helpers are never imported — the zoo is imported without ``robustbench/__init__.py``, which
would pull them in — and building a zoo network runs with network access refused, so a definition that
fetches pretrained weights fails with one clear line instead. Checkpoints load with
``torch.load(weights_only=True)`` (tensors only, no pickled code), with RobustBench's key clean-ups
(``state_dict`` wrapper, ``module.`` and ``model.`` prefixes, ``last`` snapshot).

Inputs are in [0, 1] as everywhere in poise; RobustBench models normalise inside themselves, so the network
is wrapped in a :class:`~poise.vision.models.Classifier` with mean 0 and std 1 (an identity normalisation).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import socket
import sys
import types
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import torch
from torch import nn

from poise.errors import UserError
from poise.vision.models import Classifier

PREFIX = "robustbench:"
DATASETS = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
INPUT_SHAPES = {"cifar10": (3, 32, 32), "cifar100": (3, 32, 32), "imagenet": (3, 224, 224)}
THREAT_MODELS = ("Linf", "L2", "corruptions", "corruptions_3d")
ARCHS = ("WideResNet", "DMWideResNet", "DMPreActResNet")
_INT_KEYS = ("depth", "widen_factor", "width")


def is_ref(ref: object) -> bool:
    return isinstance(ref, str) and ref.startswith(PREFIX)


@dataclass(frozen=True)
class RobustBenchRef:
    """A parsed ``robustbench:`` ref: which model, where its checkpoint lies, and optionally its architecture."""

    dataset: str
    threat_model: str
    name: str
    root: Path
    arch: str | None = None
    arch_kwargs: dict[str, int] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.root / self.dataset / self.threat_model / f"{self.name}.pt"

    @property
    def num_classes(self) -> int:
        return DATASETS[self.dataset]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return INPUT_SHAPES[self.dataset]

    @property
    def key(self) -> str:
        """The ref without its root: what names the model (``cifar10/Linf/Standard``, plus the arch)."""
        text = f"{self.dataset}/{self.threat_model}/{self.name}"
        if self.arch:
            text += "?" + "&".join([f"arch={self.arch}", *(f"{k}={v}" for k, v in sorted(self.arch_kwargs.items()))])
        return text

    @property
    def architecture(self) -> str:
        if self.arch is None:
            return "from the RobustBench model zoo"
        return self.arch + "".join(f"-{self.arch_kwargs[k]}" for k in _INT_KEYS if k in self.arch_kwargs)


def default_root() -> Path:
    return Path(os.environ.get("POISE_ROBUSTBENCH_ROOT", "models")).expanduser()


def parse_ref(ref: str, *, where: str | Path | None = None, field: str | None = None,
              relative_to: Path | None = None) -> RobustBenchRef:
    """Parse ``robustbench:<dataset>/<threat_model>/<name>[?key=value&...]`` (see the module docstring)."""
    expected = "expected robustbench:<dataset>/<threat_model>/<model_name>, e.g. robustbench:cifar10/Linf/Standard"
    if not is_ref(ref):
        raise UserError(f"{ref!r} is not a RobustBench ref; {expected}", where=where, field=field)
    body, _, query = ref.removeprefix(PREFIX).partition("?")
    parts = body.split("/")
    if len(parts) != 3 or not all(parts):
        raise UserError(f"malformed RobustBench ref {ref!r}; {expected}", where=where, field=field)
    dataset, threat, name = parts
    if dataset not in DATASETS:
        raise UserError(f"unknown RobustBench dataset {dataset!r} in {ref!r}; expected one of: "
                        f"{', '.join(DATASETS)}", where=where, field=field)
    if threat not in THREAT_MODELS:
        raise UserError(f"unknown RobustBench threat model {threat!r} in {ref!r}; expected one of: "
                        f"{', '.join(THREAT_MODELS)}", where=where, field=field)
    if name in (".", "..") or "\\" in name:
        raise UserError(f"bad model name {name!r} in {ref!r}; expected a RobustBench model name", where=where,
                        field=field)
    opts = dict(parse_qsl(query, keep_blank_values=True)) if query else {}
    unknown = set(opts) - {"root", "arch", *_INT_KEYS}
    if unknown:
        raise UserError(f"unknown option(s) {', '.join(sorted(unknown))} in {ref!r}; expected root, arch, depth, "
                        "widen_factor or width", where=where, field=field)
    arch = opts.pop("arch", None)
    if arch is not None and arch not in ARCHS:
        raise UserError(f"unknown architecture {arch!r} in {ref!r}; expected one of: {', '.join(ARCHS)}",
                        where=where, field=field)
    kwargs: dict[str, int] = {}
    for k in _INT_KEYS:
        if k in opts:
            v = opts.pop(k)
            if not v.isdigit() or int(v) < 1 or int(v) > 1000:
                raise UserError(f"{k} in {ref!r} must be a whole number from 1 to 1000 (got {v!r})", where=where,
                                field=field)
            if arch is None:
                raise UserError(f"{k} in {ref!r} needs arch=...; zoo models have fixed sizes", where=where,
                                field=field)
            kwargs[k] = int(v)
    root = Path(opts["root"]).expanduser() if opts.get("root") else default_root()
    if not root.is_absolute() and relative_to is not None and (relative_to.parent / root).is_dir():
        root = relative_to.parent / root
    return RobustBenchRef(dataset, threat, name, root, arch, kwargs)


# --------------------------------------------------------------------------- the package's zoo, without downloads


def zoo() -> Any:
    """``robustbench.model_zoo`` imported without ``robustbench/__init__.py``.

    The package's ``__init__`` imports its dataset loaders and ``robustbench.utils`` (``load_model`` and
    the Google-Drive / Zenodo download helpers), and with robustbench 1.1.1 it does not import at all:
    ``robustbench.eval`` imports ``autoattack`` while its declared dependency installs the module as
    ``pyautoattack``, and ``robustbench.loaders`` needs ``pkg_resources`` (gone in setuptools ≥ 81). The
    model definitions need none of it, so the package is entered through a bare namespace module; a
    ``robustbench`` already imported normally is used as it is.
    """
    if "robustbench" not in sys.modules:
        spec = importlib.util.find_spec("robustbench")
        if spec is None or not spec.submodule_search_locations:
            raise UserError("the robustbench package is not installed; expected `pip install poise[vision]` "
                            "(robustbench and its model-definition dependencies)", field="robustbench")
        pkg = types.ModuleType("robustbench")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__file__ = spec.origin
        pkg.__package__ = "robustbench"
        sys.modules["robustbench"] = pkg
    try:
        with warnings.catch_warnings():  # deprecation chatter of the architectures' imports
            warnings.simplefilter("ignore")
            return importlib.import_module("robustbench.model_zoo")
    except ImportError as e:
        raise UserError(f"cannot import robustbench's model zoo: {e}; expected robustbench 1.1 with timm, "
                        "geotorch and torchdiffeq installed", field="robustbench") from None


class _NetworkRefused(ConnectionRefusedError):
    pass


@contextmanager
def offline() -> Iterator[None]:
    """Refuse every connection to a non-loopback address (and HF hub access) for the duration."""
    real_connect, real_connect_ex, real_create = socket.socket.connect, socket.socket.connect_ex, \
        socket.create_connection
    env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}

    def local(address: Any) -> bool:
        host = address[0] if isinstance(address, tuple) else address
        return not isinstance(host, str) or host in ("localhost", "::1") or host.startswith("127.")

    def connect(self: socket.socket, address: Any) -> Any:
        if not local(address):
            raise _NetworkRefused(f"poise never downloads (connection to {address!r} refused)")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        if not local(address):
            raise _NetworkRefused(f"poise never downloads (connection to {address!r} refused)")
        return real_connect_ex(self, address)

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> Any:
        if not local(address):
            raise _NetworkRefused(f"poise never downloads (connection to {address!r} refused)")
        return real_create(address, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex  # type: ignore[method-assign]
    socket.create_connection = create_connection  # type: ignore[assignment]
    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        yield
    finally:
        socket.socket.connect, socket.socket.connect_ex = real_connect, real_connect_ex  # type: ignore[method-assign]
        socket.create_connection = real_create  # type: ignore[assignment]
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def zoo_names(dataset: str, threat_model: str) -> list[str]:
    mz = zoo()
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    return list(mz.model_dicts[BenchmarkDataset(dataset)].get(ThreatModel(threat_model), {}))


def build_network(ref: RobustBenchRef, *, where: str | Path | None = None, field: str | None = None) -> nn.Module:
    """The untrained network of ``ref``: the zoo's constructor, or the named architecture class."""
    zoo()
    if ref.arch is not None:
        from robustbench.model_zoo.architectures import dm_wide_resnet, wide_resnet

        kw = ref.arch_kwargs
        mean, std = ((dm_wide_resnet.CIFAR100_MEAN, dm_wide_resnet.CIFAR100_STD) if ref.dataset == "cifar100"
                     else (dm_wide_resnet.CIFAR10_MEAN, dm_wide_resnet.CIFAR10_STD))
        if ref.arch == "WideResNet":
            return wide_resnet.WideResNet(depth=kw.get("depth", 28), widen_factor=kw.get("widen_factor", 10),
                                          num_classes=ref.num_classes)
        if ref.arch == "DMWideResNet":
            return dm_wide_resnet.DMWideResNet(num_classes=ref.num_classes, depth=kw.get("depth", 28),
                                               width=kw.get("width", 10), mean=mean, std=std)
        return dm_wide_resnet.DMPreActResNet(num_classes=ref.num_classes, depth=kw.get("depth", 18),
                                             width=kw.get("width", 0), mean=mean, std=std, use_cuda=False)
    entry = _zoo_entry(ref, where=where, field=field)
    try:
        with offline():
            return entry["model"]()
    except (_NetworkRefused, OSError) as e:
        raise UserError(f"RobustBench's definition of {ref.name} fetches pretrained weights from the internet "
                        f"({type(e).__name__}); poise never downloads, so this zoo entry cannot be used",
                        where=where, field=field) from None


def _zoo_entry(ref: RobustBenchRef, *, where: str | Path | None, field: str | None) -> dict[str, Any]:
    """The installed zoo's entry for ``ref`` (a single-checkpoint model), or one line saying why not."""
    mz = zoo()
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    models = mz.model_dicts[BenchmarkDataset(ref.dataset)].get(ThreatModel(ref.threat_model), {})
    if ref.name not in models:
        close = [n for n in models if n.lower().startswith(ref.name.lower()[:4])][:5]
        raise UserError(
            f"{ref.name!r} is not in the installed RobustBench zoo for {ref.dataset}/{ref.threat_model}; "
            f"expected a zoo name{' such as ' + ', '.join(close) if close else ''}, or arch=... for a checkpoint "
            f"of one of RobustBench's architectures ({', '.join(ARCHS)})", where=where, field=field)
    entry = models[ref.name]
    if isinstance(entry.get("gdrive_id"), list):
        raise UserError(f"{ref.name} is an ensemble of several checkpoints in RobustBench; expected a single-"
                        "checkpoint model", where=where, field=field)
    return entry


def _state_dict(checkpoint: Any, name: str) -> dict[str, torch.Tensor]:
    """RobustBench's own clean-ups of a checkpoint's keys (``load_model`` without its download branch)."""
    last_snapshot = "Kireev2021Effectiveness" in name or name == "Andriushchenko2020Understanding"
    if isinstance(checkpoint, dict) and last_snapshot and "last" in checkpoint:
        checkpoint = checkpoint["last"]
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]

    def strip(sd: dict[str, Any], prefix: str) -> dict[str, Any]:
        return {(k[len(prefix):] if prefix in k else k): v for k, v in sd.items()}

    return strip(strip(dict(checkpoint), "module."), "model.")


def load_network(ref: RobustBenchRef, *, where: str | Path | None = None, field: str | None = None) -> nn.Module:
    """The RobustBench network of ``ref`` with its local checkpoint loaded, in eval mode."""
    path = ref.path
    if ref.arch is None:
        _zoo_entry(ref, where=where, field=field)
    if not path.is_file():
        folder = path.parent
        found = sorted(p.name for p in folder.glob("*.pt"))[:5] if folder.is_dir() else []
        raise UserError(
            f"no checkpoint {path}; expected <root>/<dataset>/<threat_model>/<model_name>.pt in RobustBench's "
            f"layout (root {ref.root}" + (f"; that folder has {', '.join(found)}" if found else "")
            + "; set root=... in the ref or $POISE_ROBUSTBENCH_ROOT; nothing is downloaded)",
            where=where, field=field)
    net = build_network(ref, where=where, field=field)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a corrupt or pickled-code file: one line naming it
        raise UserError(f"cannot read checkpoint {path}: {type(e).__name__}: {' '.join(str(e).split())[:200]}; "
                        "expected a torch state dict saved with torch.save (tensors only)",
                        where=where, field=field) from None
    if not isinstance(checkpoint, dict):
        raise UserError(f"checkpoint {path} holds a {type(checkpoint).__name__}; expected a state dict",
                        where=where, field=field)
    state = _state_dict(checkpoint, ref.name)
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        what = (f"missing {', '.join(result.missing_keys[:3])}" if result.missing_keys
                else f"unexpected {', '.join(result.unexpected_keys[:3])}")
        raise UserError(f"checkpoint {path} does not fit {ref.name} ({ref.architecture}): {what}; expected the "
                        "state dict of that network", where=where, field=field)
    return net.eval()


def load_classifier(ref: str | RobustBenchRef, *, where: str | Path | None = None, field: str | None = None,
                    relative_to: Path | None = None) -> tuple[Classifier, RobustBenchRef]:
    """The RobustBench model named by ``ref`` as a poise classifier (inputs in [0, 1]), and the parsed ref."""
    parsed = ref if isinstance(ref, RobustBenchRef) else parse_ref(ref, where=where, field=field,
                                                                   relative_to=relative_to)
    net = load_network(parsed, where=where, field=field)
    c = parsed.input_shape[0]
    return Classifier(net, (0.0,) * c, (1.0,) * c).eval(), parsed


def classifier_meta(ref: RobustBenchRef) -> dict[str, Any]:
    """Artifact metadata of a RobustBench classifier (what :func:`classifier_from_meta` rebuilds it from)."""
    c = ref.input_shape[0]
    return {
        "model": {"name": "robustbench", "width": None},
        "robustbench": {"dataset": ref.dataset, "threat_model": ref.threat_model, "name": ref.name,
                        "arch": ref.arch, "arch_kwargs": dict(ref.arch_kwargs)},
        "num_classes": ref.num_classes,
        "input_shape": list(ref.input_shape),
        "dataset": ref.dataset,
        "mean": [0.0] * c,
        "std": [1.0] * c,
    }


def classifier_from_meta(meta: dict[str, Any]) -> Classifier:
    """An untrained classifier shaped like a stored RobustBench artifact (load its weights next)."""
    rb = meta["robustbench"]
    ref = RobustBenchRef(rb["dataset"], rb["threat_model"], rb["name"], Path("."), rb.get("arch"),
                         dict(rb.get("arch_kwargs") or {}))
    return Classifier(build_network(ref), meta["mean"], meta["std"])


def check_fits(ref: RobustBenchRef, num_classes: int, input_shape: tuple[int, ...], dataset: str, *,
               where: str | Path | None = None, field: str | None = None) -> None:
    """A RobustBench model must classify the same classes from the same image size as the recipe's data."""
    if ref.num_classes != num_classes or tuple(ref.input_shape) != tuple(input_shape):
        raise UserError(
            f"RobustBench model {ref.key} takes {ref.dataset} ({ref.num_classes} classes, inputs "
            f"{ref.input_shape}) but the recipe's data ({dataset}) has {num_classes} classes and inputs "
            f"{tuple(input_shape)}; expected data.name = {ref.dataset!r}", where=where, field=field)


# --------------------------------------------------------------------------- RobustBench's model-info JSON


def eps_text(eps: float | None, threat_model: str) -> str | None:
    """``8/255`` for L∞ budgets on the 1/255 grid (as RobustBench's model_info files write them), else the number."""
    if eps is None:
        return None
    k = eps * 255
    if threat_model == "Linf" and abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return f"{eps:g}"


def _pct(v: float | None) -> str | None:
    return None if v is None else str(round(v * 100, 2))


def model_info(*, dataset: str, threat_model: str, clean_acc: float, eps: float | None = None,
               autoattack_acc: float | None = None, corruptions_acc: float | None = None,
               name: str | None = None, architecture: str | None = None, link: str | None = None,
               authors: str | None = None, venue: str | None = None, additional_data: bool = False,
               footnote: str | None = None) -> dict[str, Any]:
    """One model's entry in RobustBench's ``model_info/<dataset>/<threat_model>/<model>.json`` format.

    The fields and their order are those of RobustBench's ``ModelInfo``; accuracies are percentages
    written as strings with two decimals (``"94.78"``), ``eps`` as in their files (``"8/255"``, ``"0.5"``).
    ``reported`` (the paper's own figure) is left empty: poise measured every number here.
    """
    if dataset not in DATASETS:
        raise UserError(f"unknown RobustBench dataset {dataset!r}; expected one of: {', '.join(DATASETS)}",
                        field="dataset")
    if threat_model not in THREAT_MODELS:
        raise UserError(f"unknown RobustBench threat model {threat_model!r}; expected one of: "
                        f"{', '.join(THREAT_MODELS)}", field="threat_model")
    info = {
        "link": link,
        "name": name,
        "authors": authors,
        "additional_data": additional_data,
        "number_forward_passes": 1,
        "dataset": dataset,
        "venue": venue,
        "architecture": architecture,
        "eps": eps_text(eps, threat_model),
        "clean_acc": _pct(clean_acc),
        "reported": None,
        "corruptions_acc": _pct(corruptions_acc) if threat_model.startswith("corruptions") else None,
        "corruptions_acc_3d": None,
        "corruptions_mce": None,
        "corruptions_mce_3d": None,
        "autoattack_acc": _pct(autoattack_acc) if threat_model in ("Linf", "L2") else None,
        "footnote": footnote,
    }
    drop = ("autoattack_acc",) if threat_model.startswith("corruptions") else (
        "corruptions_acc", "corruptions_acc_3d", "corruptions_mce", "corruptions_mce_3d")
    return {k: v for k, v in info.items() if k not in drop}


def model_info_path(root: str | Path, dataset: str, threat_model: str, model_name: str) -> Path:
    """Where RobustBench keeps a model's JSON: ``<root>/<dataset>/<threat_model>/<model_name>.json``."""
    folder = "corruptions" if threat_model == "corruptions_3d" else threat_model
    return Path(root) / dataset / folder / f"{model_name}.json"
