"""Model merging for any model, with the methods of one table (``spec.REGISTRY``: linear, task arithmetic,
SLERP, NuSLERP, TIES, DARE, breadcrumbs, DELLA, Model Stock); on state dicts or streamed files.

``merge_state_dicts`` merges torch state dicts in memory; ``merge_files`` streams safetensors files and
Hugging Face folders tensor by tensor (NumPy only, no torch import), writing the result atomically.
Recipe kinds ``merging.merge`` and ``merging.sweep`` record merges as runs with their lineage.
"""

# imported on first use, so that ``poise.merging.commands`` (loaded by every ``poise`` call) stays light
_EXPORTS = {"MergeResult": "engine", "merge_files": "engine", "merge_state_dicts": "engine",
            "METHODS": "spec", "REGISTRY": "spec", "MergeParams": "spec", "TensorRule": "spec"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"poise.merging.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'poise.merging' has no attribute {name!r}")
