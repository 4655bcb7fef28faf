"""torch's intra-op thread count for a block of code, restored afterwards.

Tiny models (digits CNNs, 24×24 faces, small control policies) gain nothing from splitting their matrix
products across threads, and on a shared, busy CPU the extra threads made steps many times slower; the
domains run such work under ``one_thread()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def torch_threads(n: int | None) -> Iterator[int | None]:
    """Run torch's CPU ops on ``n`` threads inside the block (nothing changes when ``n`` is None)."""
    if n is None:
        yield None
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


@contextmanager
def one_thread(active: bool = True) -> Iterator[None]:
    """Run torch's CPU ops on one thread inside the block (nothing changes when ``active`` is false)."""
    with torch_threads(1 if active else None):
        yield
