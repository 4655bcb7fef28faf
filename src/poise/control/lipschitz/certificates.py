"""Bounds on the ℓ2 Lipschitz constant of a policy: certified upper bounds and empirical lower bounds.

Upper bounds (lip(π) is at most this, for every input):

* **product** — ∏ᵢ ‖Wᵢ‖₂ with exact spectral norms (float64 SVD), valid for any 1-Lipschitz activations;
* **LipSDP-Neuron** (Fazlyab et al., NeurIPS 2019) — for activations slope-restricted in [0, 1]
  (ReLU, tanh): the smallest ρ with M(ρ, T) ⪯ 0 over diagonal T ⪰ 0, solved with cvxpy, gives
  lip ≤ √ρ. Solvers stop at a tolerance, so the bound is *verified* afterwards: with the solver's T
  fixed, the exact smallest feasible ρ is the largest eigenvalue of the Schur complement of M's
  hidden block (which must be negative definite); that ρ is returned, not the solver's.

Lower bounds (lip(π) is at least this; they come from evaluating the network):

* **jacobian** — maxₓ ‖∂π/∂x(x)‖₂ over sampled states (torch.func: vmap of jacrev);
* **pairs** — max ‖π(x) − π(y)‖ / ‖x − y‖ over random pairs of states and over pairs y = x + h·v
  along the top right-singular vector v of the Jacobian at x.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from poise.control.lipschitz.policies import GroupSort, PolicyNet


@dataclass
class Certificate:
    """Upper bounds (product, LipSDP when it applies) and empirical lower bounds of lip(π)."""

    product: float
    lipsdp: float | None
    jacobian: float
    pairs: float

    @property
    def upper(self) -> float:
        return min(self.product, self.lipsdp) if self.lipsdp is not None else self.product

    @property
    def lower(self) -> float:
        return max(self.jacobian, self.pairs)

    def as_dict(self) -> dict[str, float | None]:
        return {**asdict(self), "upper": self.upper, "lower": self.lower}


def network_layers(net: nn.Module) -> tuple[list[torch.Tensor], str]:
    """Weight matrices (input to output, any output scale folded into the last) and the activation name.

    Understands :class:`PolicyNet`, a bare ``nn.Linear`` and ``nn.Sequential`` of linear layers with
    ReLU, Tanh or GroupSort between them (the same activation everywhere).
    """
    if isinstance(net, PolicyNet):
        with torch.no_grad():
            ws = [w.detach().to(torch.float64).clone() for w in net.weights()]
            ws[-1] = ws[-1] * float(net.scale)
        return ws, net.activation_name
    if hasattr(net, "linear") and isinstance(net.linear, nn.Linear) and len(list(net.children())) == 1:
        net = net.linear  # e.g. the LQR expert
    if isinstance(net, nn.Linear):
        return [net.weight.detach().to(torch.float64).clone()], "none"
    if isinstance(net, nn.Sequential):
        ws, acts = [], set()
        for m in net:
            if isinstance(m, nn.Linear):
                ws.append(m.weight.detach().to(torch.float64).clone())
            elif isinstance(m, nn.ReLU):
                acts.add("relu")
            elif isinstance(m, nn.Tanh):
                acts.add("tanh")
            elif isinstance(m, GroupSort):
                acts.add("groupsort")
            else:
                raise TypeError(f"cannot certify a network containing {type(m).__name__}")
        if len(acts) > 1:
            raise TypeError("expected one activation type throughout the network")
        return ws, acts.pop() if acts else "none"
    raise TypeError(f"cannot read the layers of a {type(net).__name__}")


def product_bound(weights: list[torch.Tensor]) -> float:
    """∏ ‖Wᵢ‖₂ (exact, float64): an upper bound on lip for 1-Lipschitz activations."""
    out = 1.0
    for w in weights:
        out *= float(torch.linalg.matrix_norm(w.to(torch.float64), ord=2))
    return out


def _lipsdp_blocks(weights: list[np.ndarray], t: np.ndarray) -> tuple[np.ndarray, int]:
    """M(0, T) of LipSDP-Neuron (slope in [0, 1]) as a dense matrix, and the input dimension n0."""
    n0 = weights[0].shape[1]
    hidden = [w.shape[0] for w in weights[:-1]]
    N = sum(hidden)
    A = np.zeros((N, n0 + N))
    r = c = 0
    for w in weights[:-1]:
        A[r : r + w.shape[0], c : c + w.shape[1]] = w
        r, c = r + w.shape[0], c + w.shape[1]
    B = np.hstack([np.zeros((N, n0)), np.eye(N)])
    T = np.diag(t)
    M = A.T @ T @ B + B.T @ T @ A - 2 * B.T @ T @ B
    last = weights[-1]
    M[-last.shape[1] :, -last.shape[1] :] += last.T @ last
    return M, n0


def lipsdp_neuron(weights: list[torch.Tensor], *, solver: str | None = None) -> float | None:
    """Verified LipSDP-Neuron bound for a ReLU/tanh MLP with these weights; None when not verifiable.

    A single linear layer needs no SDP: its Lipschitz constant is exactly ‖W‖₂.
    """
    import cvxpy as cp

    ws = [w.detach().to(torch.float64).cpu().numpy() for w in weights]
    if len(ws) == 1:
        return float(np.linalg.norm(ws[0], 2))
    n0 = ws[0].shape[1]
    N = sum(w.shape[0] for w in ws[:-1])
    # scale the problem so that the product bound is 1 (better conditioned); undo at the end
    norms = [max(float(np.linalg.norm(w, 2)), 1e-300) for w in ws]
    ws_s = [w / s for w, s in zip(ws, norms, strict=True)]
    prod = float(np.prod(norms))
    t = cp.Variable(N, nonneg=True)
    rho = cp.Variable(nonneg=True)
    # M(ρ, T) = Σ_k t_k G_k + E − ρ P is affine in (t, ρ): one dense coefficient matrix keeps cvxpy fast
    d = n0 + N
    A = np.zeros((N, d))
    r = c = 0
    for w in ws_s[:-1]:
        A[r : r + w.shape[0], c : c + w.shape[1]] = w
        r, c = r + w.shape[0], c + w.shape[1]
    G = np.zeros((N, d, d))
    k = np.arange(N)
    G += A[:, :, None] * np.eye(d)[n0 + k][:, None, :]
    G += np.transpose(G, (0, 2, 1)).copy()
    G[k, n0 + k, n0 + k] -= 2.0
    E = np.zeros((d, d))
    last = ws_s[-1]
    E[-last.shape[1] :, -last.shape[1] :] = last.T @ last
    P = np.zeros((d, d))
    P[:n0, :n0] = np.eye(n0)
    coeff = np.concatenate([G.reshape(N, d * d).T, -P.reshape(d * d, 1)], axis=1)  # [d², N + 1]
    M = cp.reshape(coeff @ cp.hstack([t, rho]), (d, d), order="C") + E
    prob = cp.Problem(cp.Minimize(rho), [(M + M.T) / 2 << 0])
    chosen = solver or ("CLARABEL" if "CLARABEL" in cp.installed_solvers() else "SCS")
    try:
        prob.solve(solver=chosen)
    except cp.error.SolverError:
        return None
    if t.value is None:
        return None
    rho_v = _verified_rho(ws_s, np.maximum(np.asarray(t.value), 0.0))
    if rho_v is None:
        return None
    return float(np.sqrt(rho_v)) * prod


def _verified_rho(weights: list[np.ndarray], t: np.ndarray) -> float | None:
    """Smallest ρ with M(ρ, T) ⪯ 0 for this T (Schur complement), or None if the hidden block is not ≺ 0."""
    for scale in (
        1.0,
        1.0 + 1e-6,
        1.0 + 1e-4,
        1.0 + 1e-2,
    ):  # nudge T up if the solver left it on the boundary
        M, n0 = _lipsdp_blocks(weights, t * scale + 1e-12)
        M11, M12, M22 = M[:n0, :n0], M[:n0, n0:], M[n0:, n0:]
        if np.linalg.eigvalsh(M22).max() < 0:
            S = M11 - M12 @ np.linalg.solve(M22, M12.T)
            return max(float(np.linalg.eigvalsh((S + S.T) / 2).max()), 0.0)
    return None


def jacobian_lower_bound(
    f: nn.Module, states: torch.Tensor, *, chunk: int = 256
) -> tuple[float, torch.Tensor]:
    """max over ``states`` of ‖J_f(x)‖₂, and the top right-singular vector of J at every state."""
    from torch.func import jacrev, vmap

    best, dirs = 0.0, []
    for i in range(0, len(states), chunk):
        xs = states[i : i + chunk]
        J = vmap(jacrev(lambda x: f(x[None])[0]))(xs)  # [b, m, n]
        _, S, Vh = torch.linalg.svd(J)
        best = max(best, float(S[:, 0].max()))
        dirs.append(Vh[:, 0, :])
    return best, torch.cat(dirs)


def pair_lower_bound(
    f: nn.Module,
    states: torch.Tensor,
    *,
    pairs: int,
    gen: torch.Generator,
    directions: torch.Tensor | None = None,
    h: float = 1e-4,
) -> float:
    """max ‖f(x) − f(y)‖ / ‖x − y‖ over random pairs of ``states`` (and along ``directions`` when given)."""
    n = len(states)
    i = torch.randint(n, (pairs,), generator=gen)
    j = torch.randint(n, (pairs,), generator=gen)
    keep = (states[i] - states[j]).norm(dim=-1) > 0
    xs, ys = [states[i[keep]]], [states[j[keep]]]
    if directions is not None:
        xs.append(states)
        ys.append(states + h * directions)
    x, y = torch.cat(xs), torch.cat(ys)
    with torch.no_grad():
        ratio = (f(x) - f(y)).norm(dim=-1) / (x - y).norm(dim=-1)
    return float(ratio.max()) if len(ratio) else 0.0


def certify(
    policy: nn.Module,
    states: torch.Tensor,
    *,
    lipsdp: bool = True,
    pairs: int = 2048,
    seed: int = 0,
    solver: str | None = None,
) -> Certificate:
    """Upper and lower bounds on lip(``policy``) (ℓ2), the lower ones probed at ``states`` (float64)."""
    f = float64_copy(policy)
    weights, act = network_layers(f)
    product = product_bound(weights)
    sdp = lipsdp_neuron(weights, solver=solver) if lipsdp and act in ("relu", "tanh", "none") else None
    states = states.to(torch.float64)
    jac, dirs = jacobian_lower_bound(f, states)
    pr = pair_lower_bound(f, states, pairs=pairs, gen=torch.Generator().manual_seed(seed), directions=dirs)
    return Certificate(product, sdp, jac, pr)


def float64_copy(policy: nn.Module) -> nn.Module:
    """A frozen float64 copy in eval mode (certificates and attacks use the exact same function).

    A :class:`PolicyNet` becomes a plain ``nn.Sequential`` with the weights its eval-mode forward uses
    (spectral normalisation baked in, the output scale α folded into the last layer), so the copy
    does not re-normalise at every forward.
    """
    import copy

    if isinstance(policy, PolicyNet):
        with torch.no_grad():
            mods: list[nn.Module] = []
            scale = float(policy.scale)
            for i, (layer, w) in enumerate(zip(policy.layers, policy.eval().weights(), strict=True)):
                last = i == len(policy.layers) - 1
                lin = nn.Linear(layer.in_features, layer.out_features, dtype=torch.float64)
                lin.weight.copy_(w.detach().to(torch.float64) * (scale if last else 1.0))
                lin.bias.copy_(layer.bias.detach().to(torch.float64) * (scale if last else 1.0))
                mods.append(lin)
                if not last:
                    mods.append(copy.deepcopy(policy.act))
        f = nn.Sequential(*mods).to(policy.scale.device)
    else:
        f = copy.deepcopy(policy).to(torch.float64)
    f.eval().requires_grad_(False)
    return f
