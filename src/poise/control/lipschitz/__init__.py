"""Lipschitz feedback policies from expert demonstrations (Al Makdah, Krishnan, Pasqualetti).

Experts (LQR, energy shaping + LQR, SB3 agents) give demonstrations; behaviour cloning fits an
unconstrained MLP or an α-Lipschitz policy π = α·g; certificates bound lip(π) from above and below;
bounded attacks on the measured state check what the bound promises: ‖π(x+δ) − π(x)‖ ≤ lip(π)·ε.
"""

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch's CPU ops on one thread: these problems are tiny matrices, where splitting work across
    threads costs far more than the arithmetic (100× slower on a busy 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
