"""torch's intra-op thread count for a block of code, restored afterwards.

Tiny models (digits CNNs, 24×24 faces, small control policies) gain nothing from splitting their matrix
products across threads, and on a shared, busy CPU the extra threads made steps many times slower; the
domains run such work under ``one_thread()``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def one_thread(active: bool = True) -> Iterator[None]:
    """Run torch's CPU ops on one thread inside the block (nothing changes when ``active`` is false)."""
    if not active:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
