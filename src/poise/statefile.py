"""Nested training state (state dicts, optimizer state, RNG states) as tensors + a JSON skeleton.

Checkpoints never pickle: :func:`flatten` splits any nesting of dicts, lists, tuples, tensors, numpy
arrays and JSON scalars into a flat ``{key: tensor}`` map (saved as safetensors) and a JSON skeleton
that :func:`unflatten` turns back into the same structure.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def untied(tensors: dict[str, Any]) -> dict[str, torch.Tensor]:
    """CPU, contiguous copies safetensors accepts: tensors that share memory (tied embeddings) are
    cloned, since safetensors refuses shared storage; loading into the module re-ties them."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for k, v in tensors.items():
        t = v.detach().cpu().contiguous()
        if t.numel():
            key = (t.untyped_storage().data_ptr(), t.storage_offset())
            if key in seen or any(t.untyped_storage().data_ptr() == p for p, _ in seen):
                t = t.clone()
            seen.add((t.untyped_storage().data_ptr(), t.storage_offset()))
        out[k] = t
    return out


def flatten(obj: Any, prefix: str = "s") -> tuple[dict[str, torch.Tensor], Any]:
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            tensors[path] = x.detach().cpu().contiguous()
            return {"__tensor__": path}
        if isinstance(x, np.ndarray):
            tensors[path] = torch.from_numpy(np.ascontiguousarray(x).copy())
            return {"__ndarray__": path}
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, dict):
            if all(isinstance(k, str) for k in x):
                return {"__dict__": {k: walk(v, f"{path}.{k}") for k, v in x.items()}}
            return {"__items__": [[walk(k, f"{path}.k{i}"), walk(v, f"{path}.{i}")]
                                  for i, (k, v) in enumerate(x.items())]}
        if isinstance(x, tuple):
            return {"__tuple__": [walk(v, f"{path}.{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(x)]
        if x is None or isinstance(x, bool | int | float | str):
            return x
        raise TypeError(f"cannot checkpoint a {type(x).__name__} at {path}")

    return tensors, walk(obj, prefix)


def unflatten(tensors: dict[str, torch.Tensor], skeleton: Any) -> Any:
    def walk(x: Any) -> Any:
        if isinstance(x, list):
            return [walk(v) for v in x]
        if isinstance(x, dict):
            if "__tensor__" in x:
                return tensors[x["__tensor__"]]
            if "__ndarray__" in x:
                return tensors[x["__ndarray__"]].numpy()
            if "__tuple__" in x:
                return tuple(walk(v) for v in x["__tuple__"])
            if "__items__" in x:
                return {walk(k): walk(v) for k, v in x["__items__"]}
            if "__dict__" in x:
                return {k: walk(v) for k, v in x["__dict__"].items()}
        return x

    return walk(skeleton)
