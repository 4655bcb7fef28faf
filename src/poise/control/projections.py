"""Projections onto l1, l2 and l∞ balls and random points on their spheres, batched over rows.

Every function works on the last dimension of a ``(n, d)`` tensor with one radius per row, so a
batch of environments can carry different budgets. The l1 projection is the sort-based simplex
projection of Duchi, Shalev-Shwartz, Singer and Chandra (ICML 2008).
"""

from __future__ import annotations

import math
from typing import Any

import torch

NORMS = (1.0, 2.0, math.inf)


def parse_norm(value: Any) -> float:
    """1, 2 or inf (also ``"l1"``, ``"l2"``, ``"linf"``, ``"inf"``) as a float; anything else is a ValueError."""
    text = str(value).strip().lower().removeprefix("l") if isinstance(value, str) else value
    if isinstance(text, str):
        text = {"1": 1.0, "2": 2.0, "inf": math.inf, "infinity": math.inf}.get(text, text)
    if isinstance(text, bool) or not isinstance(text, int | float) or float(text) not in NORMS:
        raise ValueError(f"expected a norm of 1, 2 or inf (got {value!r})")
    return float(text)


def canonical_norm(value: Any) -> float | str:
    """A norm as recipes store it: 1.0, 2.0 or ``"inf"`` (JSON has no infinity); ValueError otherwise."""
    p = parse_norm(value)
    return "inf" if math.isinf(p) else p


def norm_name(p: float | str) -> str:
    p = parse_norm(p)
    return "inf" if math.isinf(p) else str(int(p))


def lp_norm(x: torch.Tensor, p: float) -> torch.Tensor:
    """Row norms of ``x`` over its last dimension."""
    return torch.linalg.vector_norm(x, ord=p, dim=-1)


def _radius(radius: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    r = torch.as_tensor(radius, dtype=x.dtype, device=x.device)
    return r.expand(x.shape[:-1]) if r.dim() == 0 else r


def project_simplex(v: torch.Tensor, z: torch.Tensor | float) -> torch.Tensor:
    """Euclidean projection of each row of ``v`` onto the simplex {w ≥ 0, Σw = z} (z > 0)."""
    z = _radius(z, v).unsqueeze(-1)
    u, _ = torch.sort(v, dim=-1, descending=True)
    css = torch.cumsum(u, dim=-1) - z
    k = torch.arange(1, v.shape[-1] + 1, device=v.device, dtype=v.dtype)
    cond = u - css / k > 0
    rho = cond.to(v.dtype).cumsum(-1).argmax(-1, keepdim=True)  # last index where cond holds
    theta = css.gather(-1, rho) / (rho + 1).to(v.dtype)
    return torch.clamp(v - theta, min=0.0)


def project_ball(x: torch.Tensor, radius: torch.Tensor | float, p: float) -> torch.Tensor:
    """Euclidean projection of each row of ``x`` onto the l_p ball of its radius (p in 1, 2, inf)."""
    r = _radius(radius, x)
    if math.isinf(p):
        return torch.maximum(torch.minimum(x, r.unsqueeze(-1)), -r.unsqueeze(-1))
    n = lp_norm(x, p)
    if p == 2.0:
        scale = torch.where(n > r, r / n.clamp_min(1e-12), torch.ones_like(n))
        return x * scale.unsqueeze(-1)
    if p == 1.0:
        inside = (n <= r).unsqueeze(-1)
        proj = torch.sign(x) * project_simplex(x.abs(), r.clamp_min(1e-12))
        proj = torch.where((r > 0).unsqueeze(-1), proj, torch.zeros_like(x))
        return torch.where(inside, x, proj)
    raise ValueError(f"expected a norm of 1, 2 or inf (got {p!r})")


def sample_sphere(n: int, d: int, radius: torch.Tensor | float, p: float, generator: torch.Generator,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` random points with l_p norm exactly ``radius``: uniform direction for l2, uniform on the
    l1 sphere (normalised Laplace draws), and a uniform vertex (random signs) for l∞."""
    if math.isinf(p):
        x = torch.randint(0, 2, (n, d), generator=generator).to(dtype) * 2 - 1
    elif p == 2.0:
        x = torch.randn(n, d, generator=generator, dtype=dtype)
    else:
        e = -torch.log(torch.rand(n, d, generator=generator, dtype=dtype).clamp_min(1e-12))
        x = e * (torch.randint(0, 2, (n, d), generator=generator).to(dtype) * 2 - 1)
    r = _radius(radius, x.new_zeros(n, 1))
    return x / lp_norm(x, p).clamp_min(1e-12).unsqueeze(-1) * r.unsqueeze(-1)


def sample_ball(n: int, d: int, radius: torch.Tensor | float, p: float, generator: torch.Generator,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` points drawn uniformly from the l_p ball (random starts of PGD)."""
    r = _radius(radius, torch.zeros(n, 1, dtype=dtype)).unsqueeze(-1)
    if math.isinf(p):
        return (torch.rand(n, d, generator=generator, dtype=dtype) * 2 - 1) * r
    if p == 2.0:
        u = torch.rand(n, 1, generator=generator, dtype=dtype) ** (1.0 / d)
        return sample_sphere(n, d, 1.0, 2.0, generator, dtype) * u * r
    e = -torch.log(torch.rand(n, d + 1, generator=generator, dtype=dtype).clamp_min(1e-12))
    signs = torch.randint(0, 2, (n, d), generator=generator).to(dtype) * 2 - 1
    return signs * e[:, :d] / e.sum(-1, keepdim=True) * r
