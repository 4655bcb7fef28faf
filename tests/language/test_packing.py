"""Packed batches of the base (``train.pack``): the same tokens, the same loss and gradients as the padded batch."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from poise.language.packing import pack_rows
from poise.store import Store
from tests.language.conftest import TINY_TOML, WORLD

PAD = 0


def _padded(lengths: list[int], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded rows of distinct token ids (row i, position j -> 1000 i + j + 1), labels the ids but the first."""
    x = torch.full((len(lengths), width), PAD, dtype=torch.long)
    y = torch.full((len(lengths), width), -100, dtype=torch.long)
    for i, n in enumerate(lengths):
        x[i, :n] = 1000 * i + torch.arange(n) + 1
        y[i, :n] = x[i, :n]
        y[i, 0] = -100
    return x, y


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 24), min_size=1, max_size=20), st.integers(0, 8))
def test_packing_keeps_every_token_once_and_every_label_but_each_pieces_first(lengths, spare):
    capacity = max(lengths) + spare
    x, y = _padded(lengths, capacity)
    ids, labels, pos = pack_rows(x, y, PAD, capacity)
    assert ids.shape[1] <= capacity and len(ids) <= len(lengths)
    real = ids[ids != PAD]
    assert sorted(real.tolist()) == sorted(x[x != PAD].tolist())  # each token once
    wanted = sorted(y[:, 1:][y[:, 1:] != -100].tolist())
    assert sorted(labels[labels != -100].tolist()) == wanted  # the padded batch's predicted labels, no more
    # positions restart at 0 at each piece and count up within it: a piece is one original row, in order
    for r in range(len(ids)):
        starts = (pos[r] == 0).nonzero().flatten().tolist() + [ids.shape[1]]
        for a, b in zip(starts, starts[1:], strict=False):
            piece = ids[r, a:b]
            if (piece == PAD).all():
                continue
            row = int(piece[0]) // 1000
            assert piece.tolist() == x[row, : b - a].tolist()
            assert labels[r, a] == -100


def test_a_row_longer_than_the_capacity_is_refused():
    x, y = _padded([5, 9], 9)
    with pytest.raises(ValueError, match="9 tokens"):
        pack_rows(x, y, PAD, 8)


def test_the_packed_loss_and_gradients_are_the_padded_batchs(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    lengths = [30, 7, 22, 12, 3, 17, 25, 9]
    x, y = _padded(lengths, 40)
    for i, n in enumerate(lengths):
        x[i, :n] = torch.randint(3, vocab, (n,), generator=g)
        y[i, :n] = x[i, :n]
        y[i, : n // 3] = -100  # a prompt part without loss, as in a chat
    ref = model(input_ids=x, attention_mask=(x != PAD).long(), labels=y).loss
    ref.backward()
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ids, labels, pos = pack_rows(x, y, PAD, 40)
    assert len(ids) < len(x)
    loss = model(input_ids=ids, position_ids=pos, labels=labels, use_cache=False).loss
    loss.backward()
    assert loss.item() == pytest.approx(ref.item(), abs=1e-5)
    for a, b in zip(ref_grads, (p.grad for p in model.parameters()), strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def _base(path, pack: bool):
    path.write_text("\n".join([
        'kind = "language.base"', "seed = 0", "[model]", TINY_TOML, *WORLD,
        "[train]", "lr = 3e-3", "batch_size = 8", f"pack = {str(pack).lower()}", "budget = { steps = 3 }",
        'schedule = { name = "constant" }',
    ]) + "\n")
    return path


def test_a_packed_base_trains_to_the_padded_bases_weights(cli, tmp_path):
    for pack in (True, False):
        code, _, err = cli("--json", "run", _base(tmp_path / f"base-{pack}.toml", pack))
        assert code == 0, err
    store = Store(root=tmp_path / ".poise")
    try:
        runs = {r.config["train"]["pack"]: r.id for r in store.list_runs(status="done")}
        packed, _ = store.load_tensors(runs[True], "model")
        padded, _ = store.load_tensors(runs[False], "model")
    finally:
        store.close()
    assert packed.keys() == padded.keys()
    for k in packed:
        torch.testing.assert_close(packed[k], padded[k], atol=1e-4, rtol=1e-3)
