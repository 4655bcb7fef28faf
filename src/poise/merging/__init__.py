"""Model merging for any model: linear, task arithmetic, SLERP, TIES, DARE; on state dicts or streamed files.

``merge_state_dicts`` merges torch state dicts in memory; ``merge_files`` streams safetensors files and
Hugging Face folders tensor by tensor (NumPy only, no torch import), writing the result atomically.
Recipe kinds ``merging.merge`` and ``merging.sweep`` record merges as runs with their lineage.
"""

from poise.merging.engine import MergeResult, merge_files, merge_state_dicts
from poise.merging.spec import METHODS, MergeParams, TensorRule

__all__ = ["METHODS", "MergeParams", "MergeResult", "TensorRule", "merge_files", "merge_state_dicts"]
