"""The exact min-norm solver behind MGDA: the convex weights of the nearest point of a polytope to 0.

Wolfe's algorithm on the Gramian alone, in float64 on the CPU; it needs nothing from torchjd.
"""

from __future__ import annotations

import torch

__all__ = ["min_norm_weights"]


def min_norm_weights(gramian: torch.Tensor, tolerance: float = 1e-12, max_iters: int = 1000) -> torch.Tensor:
    """The convex weights of the min-norm point of the convex hull of K vectors, from their Gramian.

    Wolfe's algorithm ("Finding the nearest point in a polytope", Math. Programming 1976) on
    inner products only: a corral of active vectors, the affine minimiser over it (a bordered
    K×K solve), and a step back to the hull whenever a weight would turn negative. It ends
    after finitely many steps at the exact minimiser (up to the precision of float64, in which
    it runs on the CPU); ``tolerance`` is Wolfe's optimality test relative to the largest
    squared norm. Weights are returned with the Gramian's dtype and device.
    """
    G = gramian.detach().to("cpu", torch.float64)
    K = G.shape[0]
    scale = float(G.diagonal().max().clamp_min(1e-300))
    start = int(G.diagonal().argmin())
    support, w = [start], torch.zeros(K, dtype=torch.float64)
    w[start] = 1.0
    for _ in range(max_iters):
        g = G @ w
        j = int(g.argmin())
        if float(g[j]) >= float(w @ g) - tolerance * scale or j in support:
            break  # x·p_j ≥ x·x for every vector j: x is the min-norm point
        support.append(j)
        while True:  # minor cycle: the affine minimiser over the corral, or the step towards it
            n = len(support)
            system = torch.zeros(n + 1, n + 1, dtype=torch.float64)
            system[:n, :n] = G[support][:, support]
            system[:n, n], system[n, :n] = -1.0, 1.0
            rhs = torch.zeros(n + 1, dtype=torch.float64)
            rhs[n] = 1.0
            v = torch.linalg.lstsq(system, rhs[:, None]).solution[:n, 0]
            current = w[support]
            if bool((v > 1e-15).all()):
                w = torch.zeros(K, dtype=torch.float64)
                w[support] = v
                break
            blocked = v <= 1e-15
            theta = float((current[blocked] / (current[blocked] - v[blocked])).min().clamp(0, 1))
            current = current + theta * (v - current)
            keep = current > 1e-15
            keep[int(torch.where(blocked, current, torch.full_like(current, torch.inf)).argmin())] = False
            w = torch.zeros(K, dtype=torch.float64)
            support = [i for i, k in zip(support, keep.tolist()) if k]
            w[support] = current[keep]
            w = w / w.sum()
    return w.to(gramian.device, gramian.dtype)
