"""Packed batches: several padded rows laid end to end in fewer, denser rows, the same loss for less compute.

A batch of chats and fact sentences padded to its longest row is about half padding. Packing places the
rows' real tokens one after another in rows of at most ``capacity`` tokens (first fit, longest first) and
restarts ``position_ids`` at 0 for each piece; transformers then masks attention within each piece (its
packed-sequence mask, built from the position ids when no attention mask is given), so no token sees
another piece. The first label of every piece is dropped (-100): it would be predicted from the previous
piece's last token, and in the padded batch it is never predicted either. The loss — the mean over the
same labelled tokens — is therefore the padded batch's loss (tests/language/test_packing.py checks it
against the padded forward pass).
"""

from __future__ import annotations

import torch


def pack_rows(
    x: torch.Tensor, y: torch.Tensor, pad_id: int, capacity: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids, labels, position_ids)`` of the right-padded rows ``x``/``y`` packed into rows of at most
    ``capacity`` tokens (``capacity`` ≥ the longest row)."""
    lengths = (x != pad_id).sum(1).tolist()
    if max(lengths, default=0) > capacity:
        raise ValueError(f"a row of {max(lengths)} tokens does not fit a packed row of {capacity}")
    bins: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for b, free in enumerate(room):
            if lengths[i] <= free:
                bins[b].append(i)
                room[b] -= lengths[i]
                break
        else:
            bins.append([i])
            room.append(capacity - lengths[i])
    width = max(capacity - r for r in room)
    ids = torch.full((len(bins), width), pad_id, dtype=x.dtype)
    labels = torch.full((len(bins), width), -100, dtype=y.dtype)
    pos = torch.zeros((len(bins), width), dtype=torch.long)
    for r, members in enumerate(bins):
        at = 0
        for i in members:
            n = lengths[i]
            ids[r, at : at + n] = x[i, :n]
            labels[r, at + 1 : at + n] = y[i, 1:n]
            pos[r, at : at + n] = torch.arange(n)
            at += n
        pos[r, at:] = torch.arange(width - at)  # the padding tail is a piece of its own, with no labels
    return ids, labels, pos
