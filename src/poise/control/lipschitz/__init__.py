"""Lipschitz feedback policies from expert demonstrations (Al Makdah, Krishnan, Pasqualetti).

Experts (LQR, energy shaping + LQR, SB3 agents) give demonstrations; behaviour cloning fits an
unconstrained MLP or an α-Lipschitz policy π = α·g; certificates bound lip(π) from above and below;
bounded attacks on the measured state check what the bound promises: ‖π(x+δ) − π(x)‖ ≤ lip(π)·ε.
"""

from poise.threads import one_thread

__all__ = ["one_thread"]
