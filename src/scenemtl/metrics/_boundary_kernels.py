"""Compiled kernels of the boundary benchmark (numba): thinning, non-maximum suppression, matching.

Written from the published definitions: MATLAB's ``bwmorph(..., 'thin', Inf)`` (Lam, Lee and
Suen 1992, the two-subiteration rule), Piotr Dollár's ``convTri``, ``gradient2`` and
``edgesNmsMex`` (bilinear comparison along the edge normal, a 1.01 margin, boundary fade) with
their float32 operations in their order, so that the suppressed pixels are SEISM's, SEISM's
``relabel``, and a maximum-cardinality bipartite matching (Hopcroft–Karp) between prediction and
ground-truth pixels closer than the match distance.

Over 400 lines because each kernel follows its definition step by step (thinning, NMS,
relabelling, matching) and they share numba helpers that are kept beside their callers.
"""

from __future__ import annotations

import math
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

# Neighbours x1..x8 of p, counter-clockwise from east (row, column offsets), as in Lam et al.
_NEIGHBOURS = ((0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1))


def _thinning_tables() -> tuple[np.ndarray, np.ndarray]:
    """Deletion tables of the two subiterations, indexed by the 8-bit neighbourhood code."""
    first = np.zeros(256, dtype=np.bool_)
    second = np.zeros(256, dtype=np.bool_)
    for code in range(256):
        x = [(code >> i) & 1 for i in range(8)]  # x[0] = x1 … x[7] = x8
        x_h = sum(1 for i in range(4) if x[2 * i] == 0 and (x[2 * i + 1] == 1 or x[(2 * i + 2) % 8] == 1))
        n1 = sum(1 for k in range(4) if x[2 * k] or x[2 * k + 1])
        n2 = sum(1 for k in range(4) if x[2 * k + 1] or x[(2 * k + 2) % 8])
        g1 = x_h == 1
        g2 = 2 <= min(n1, n2) <= 3
        # G3: (x2 ∨ x3 ∨ ¬x8) ∧ x1 = 0;  G3': (x6 ∨ x7 ∨ ¬x4) ∧ x5 = 0
        g3 = not ((x[1] or x[2] or not x[7]) and x[0])
        g3_prime = not ((x[5] or x[6] or not x[3]) and x[4])
        first[code] = g1 and g2 and g3
        second[code] = g1 and g2 and g3_prime
    return first, second


FIRST, SECOND = _thinning_tables()
ROW_OFFSETS = np.array([o[0] for o in _NEIGHBOURS], dtype=np.int64)
COL_OFFSETS = np.array([o[1] for o in _NEIGHBOURS], dtype=np.int64)


@numba.njit(cache=True)
def _code(mask: npt.NDArray[np.bool_], r: int, c: int, dr: npt.NDArray[np.int64], dc: npt.NDArray[np.int64]) -> int:
    height, width = mask.shape
    code = 0
    for i in range(8):
        rr, cc = r + dr[i], c + dc[i]
        if 0 <= rr < height and 0 <= cc < width and mask[rr, cc]:
            code |= 1 << i
    return code


@numba.njit(cache=True)
def thin(
    mask: npt.NDArray[np.bool_],
    first: npt.NDArray[np.bool_],
    second: npt.NDArray[np.bool_],
    dr: npt.NDArray[np.int64],
    dc: npt.NDArray[np.int64],
) -> npt.NDArray[np.bool_]:
    """Thin a boolean mask to one-pixel lines until nothing changes (``bwmorph(mask, 'thin', Inf)``)."""
    out: npt.NDArray[np.bool_] = mask.copy()
    rows, cols = np.nonzero(out)
    count = rows.size
    delete = np.zeros(count, dtype=np.bool_)
    changed = True
    while changed:
        changed = False
        for table in (first, second):
            # decide every deletion of the subiteration on the same image, then apply them
            for k in range(count):
                delete[k] = out[rows[k], cols[k]] and table[_code(out, rows[k], cols[k], dr, dc)]
            for k in range(count):
                if delete[k]:
                    out[rows[k], cols[k]] = False
                    changed = True
        keep = 0
        for k in range(count):  # drop deleted pixels from the work list
            if out[rows[k], cols[k]]:
                rows[keep], cols[keep] = rows[k], cols[k]
                keep += 1
        count = keep
    return out


_F0, _F1, _F2 = np.float32(0), np.float32(1), np.float32(2)


@numba.njit(cache=True)
def _conv_tri_column(src: npt.NDArray[np.float32], out: npt.NDArray[np.float32], r: int) -> None:
    """One column pass of Piotr's ``convTriY`` (radius ``r``, step 1): running sums in float32, in its order."""
    h = src.size
    r += 1
    r0, r1, r2 = r - 1, r + 1, 2 * h - r
    h0, h1 = r + 1, h - r + 1
    t = src[0]
    u = t
    for j in range(1, r):
        t = t + src[j]
        u = u + t
    u = _F2 * u - t
    t = _F0
    out[0] = u
    for j in range(1, h):
        if j < h0:
            t = t + ((src[r - j] + src[r0 + j]) - _F2 * src[j - 1])
        elif j < h1:
            t = t + ((src[j - r1] + src[r0 + j]) - _F2 * src[j - 1])
        else:
            t = t + ((src[j - r1] + src[r2 - j]) - _F2 * src[j - 1])
        u = u + t
        out[j] = u


@numba.njit(cache=True)
def conv_tri(image: npt.NDArray[np.float32], radius: int) -> npt.NDArray[np.float32]:
    """Piotr's ``convConst('convTri', I, r, 1)`` on a float32 image: the exact float32 operations, in order.

    MATLAB stores images by column, so the C code's "columns" are our columns and its first pass
    runs along the rows. Needs ``min(h, w) > 2r + 1`` (``convTri.m`` takes another path below).
    """
    h, w = image.shape
    r = radius + 1
    nrm = _F1 / np.float32(r * r * r * r)
    out = np.empty((h, w), dtype=np.float32)
    t = np.empty(h, dtype=np.float32)
    u = np.empty(h, dtype=np.float32)
    column = np.empty(h, dtype=np.float32)
    for j in range(h):
        t[j] = image[j, 0]
        u[j] = t[j]
    for i in range(1, r):
        for j in range(h):
            t[j] = t[j] + image[j, i]
            u[j] = u[j] + t[j]
    for j in range(h):
        u[j] = nrm * (_F2 * u[j] - t[j])
        t[j] = _F0
    _conv_tri_column(u, column, radius)
    out[:, 0] = column
    for i in range(1, w):
        left = i - 1 - r if i > r else r - i
        right = i - 1 + r if i <= w - r else 2 * w - r - i
        for j in range(h):
            t[j] = t[j] + ((image[j, left] + image[j, right]) + (-_F2 * image[j, i - 1]))
            u[j] = u[j] + nrm * t[j]
        _conv_tri_column(u, column, radius)
        out[:, i] = column
    return out


@numba.njit(cache=True)
def conv_tri1(image: npt.NDArray[np.float32], p: np.float32) -> npt.NDArray[np.float32]:
    """Piotr's ``convConst('convTri1', I, p, 1)``: the [1 p 1]/(p+2)² filter in float32, in the MEX's order."""
    h, w = image.shape
    nrm = _F1 / ((p + _F2) * (p + _F2))
    edge = _F1 + p
    t = np.empty(h, dtype=np.float32)
    out = np.empty((h, w), dtype=np.float32)
    for i in range(w):
        left = i - 1 if i > 0 else i
        right = i + 1 if i < w - 1 else i
        for j in range(h):
            t[j] = nrm * ((image[j, left] + p * image[j, i]) + image[j, right])
        out[0, i] = edge * t[0] + t[1]
        for j in range(1, h - 1):
            out[j, i] = (t[j - 1] + p * t[j]) + t[j + 1]
        out[h - 1, i] = t[h - 2] + edge * t[h - 1]
    return out


@numba.njit(cache=True)
def gradient2(image: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Piotr's ``gradient2`` in float32: central differences × 0.5, one-sided at the borders. Returns (gx, gy)."""
    h, w = image.shape
    gx = np.empty((h, w), dtype=np.float32)
    gy = np.empty((h, w), dtype=np.float32)
    half = np.float32(0.5)
    for r in range(h):
        for c in range(w):
            if w == 1:
                gx[r, c] = _F0
            elif c == 0:
                gx[r, c] = image[r, 1] - image[r, 0]
            elif c == w - 1:
                gx[r, c] = image[r, w - 1] - image[r, w - 2]
            else:
                gx[r, c] = (image[r, c + 1] - image[r, c - 1]) * half
            if h == 1:
                gy[r, c] = _F0
            elif r == 0:
                gy[r, c] = image[1, c] - image[0, c]
            elif r == h - 1:
                gy[r, c] = image[h - 1, c] - image[h - 2, c]
            else:
                gy[r, c] = (image[r + 1, c] - image[r - 1, c]) * half
    return gx, gy


@numba.njit(cache=True)
def orientation(smooth: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """``mod(atan(Oyy.*sign(-Oxy)./(Oxx+1e-5)), pi)`` of a smoothed map, in MATLAB's single arithmetic.

    MATLAB casts a double operand to single before a mixed operation, so 1e-5 and π are singles.
    """
    ox, oy = gradient2(smooth)
    oxx, _ = gradient2(ox)
    oxy, oyy = gradient2(oy)
    h, w = smooth.shape
    out = np.empty((h, w), dtype=np.float32)
    eps = np.float32(1e-5)
    pi = np.float32(math.pi)
    for r in range(h):
        for c in range(w):
            s = -oxy[r, c]
            sign = _F1 if s > 0 else (-_F1 if s < 0 else _F0)
            angle = math.atan((oyy[r, c] * sign) / (oxx[r, c] + eps))
            # x − floor(x/π)·π for x = atan(·) in (−π/2, π/2]: x + π below 0, else x
            out[r, c] = angle + pi if angle < 0 else angle
    return out


@numba.njit(cache=True)
def _interp(image: npt.NDArray[np.float32], row: float, col: float) -> float:
    """Bilinear sample as ``edgesNmsMex``'s ``interp``: clamps in double, interpolates in float32."""
    height, width = image.shape
    if col < 0:
        col = _F0
    elif col > width - 1.001:
        col = np.float32(width - 1.001)
    if row < 0:
        row = _F0
    elif row > height - 1.001:
        row = np.float32(height - 1.001)
    c0, r0 = int(col), int(row)
    dc0 = col - np.float32(c0)
    dr0 = row - np.float32(r0)
    dc1 = _F1 - dc0
    dr1 = _F1 - dr0
    value: float = (
        image[r0, c0] * dc1 * dr1 + image[r0, c0 + 1] * dc0 * dr1 + image[r0 + 1, c0] * dc1 * dr0 + image[r0 + 1, c0 + 1] * dc0 * dr0
    )
    return value


@numba.njit(cache=True)
def nms(
    edges: npt.NDArray[np.float32], orientation: npt.NDArray[np.float32], radius: int, border: int, margin: np.float32
) -> npt.NDArray[np.float32]:
    """``edgesNmsMex`` in float32: zero pixels weaker than ``margin`` × a neighbour along the normal; fade the sides."""
    height, width = edges.shape
    out = np.zeros_like(edges)
    for r in range(height):
        for c in range(width):
            e = edges[r, c]
            out[r, c] = e
            if e == 0:
                continue
            e = e * margin
            co = math.cos(orientation[r, c])
            si = math.sin(orientation[r, c])
            for d in range(-radius, radius + 1):
                if d != 0:
                    fd = np.float32(d)
                    if e < _interp(edges, np.float32(r) + fd * si, np.float32(c) + fd * co):
                        out[r, c] = 0
                        break
    s = min(border, width // 2, height // 2)
    for c in range(s):
        fade = np.float32(c) / np.float32(s)
        for r in range(height):
            out[r, c] *= fade
            out[r, width - 1 - c] *= fade
    for c in range(width):
        for r in range(s):
            fade = np.float32(r) / np.float32(s)
            out[r, c] *= fade
            out[height - 1 - r, c] *= fade
    return out


@numba.njit(cache=True)
def relabel(labels: npt.NDArray[Any]) -> npt.NDArray[np.int64]:
    """Number the 4-connected regions of equal label (SEISM's ``relabel``, via its grid boundary map)."""
    h, w = labels.shape
    parent = np.arange(h * w)
    for r in range(h):
        for c in range(w):
            k = r * w + c
            if c > 0 and labels[r, c - 1] == labels[r, c]:
                _union(parent, k, k - 1)
            if r > 0 and labels[r - 1, c] == labels[r, c]:
                _union(parent, k, k - w)
    out = np.empty((h, w), dtype=np.int64)
    for r in range(h):
        for c in range(w):
            out[r, c] = _find(parent, r * w + c)
    return out


@numba.njit(cache=True)
def _find(parent: npt.NDArray[np.int64], k: int) -> int:
    root = k
    while parent[root] != root:
        root = parent[root]
    while parent[k] != root:  # path compression
        parent[k], k = root, parent[k]
    return root


@numba.njit(cache=True)
def _union(parent: npt.NDArray[np.int64], a: int, b: int) -> None:
    ra, rb = _find(parent, a), _find(parent, b)
    if ra != rb:
        if ra < rb:
            parent[rb] = ra
        else:
            parent[ra] = rb


@numba.njit(cache=True)
def neighbour_lists(
    candidate_rows: npt.NDArray[np.int64],
    candidate_cols: npt.NDArray[np.int64],
    gt_index: npt.NDArray[np.int64],
    offset_rows: npt.NDArray[np.int64],
    offset_cols: npt.NDArray[np.int64],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """CSR lists of the ground-truth pixels within the disc around each candidate prediction pixel."""
    height, width = gt_index.shape
    count = candidate_rows.size
    start = np.zeros(count + 1, dtype=np.int64)
    for k in range(count):
        n = 0
        for j in range(offset_rows.size):
            rr, cc = candidate_rows[k] + offset_rows[j], candidate_cols[k] + offset_cols[j]
            if 0 <= rr < height and 0 <= cc < width and gt_index[rr, cc] >= 0:
                n += 1
        start[k + 1] = start[k] + n
    targets = np.empty(start[count], dtype=np.int64)
    for k in range(count):
        p = start[k]
        for j in range(offset_rows.size):
            rr, cc = candidate_rows[k] + offset_rows[j], candidate_cols[k] + offset_cols[j]
            if 0 <= rr < height and 0 <= cc < width and gt_index[rr, cc] >= 0:
                targets[p] = gt_index[rr, cc]
                p += 1
    return start, targets


@numba.njit(cache=True)
def max_matching(
    active: npt.NDArray[np.bool_],
    start: npt.NDArray[np.int64],
    targets: npt.NDArray[np.int64],
    n_right: int,
    match_left: npt.NDArray[np.int64],
    match_right: npt.NDArray[np.int64],
) -> int:
    """Hopcroft–Karp over the active left nodes; ``match_*`` (−1 = free) may hold a warm start. Returns its size."""
    n_left = active.size
    inf = n_left + n_right + 1
    dist = np.empty(n_left, dtype=np.int64)
    queue = np.empty(n_left, dtype=np.int64)
    stack = np.empty(n_left + 1, dtype=np.int64)
    cursor = np.empty(n_left, dtype=np.int64)  # next edge to try, per left node (current-arc)
    while True:
        # layers by breadth-first search from the free active left nodes
        head = tail = 0
        for u in range(n_left):
            if active[u] and match_left[u] < 0:
                dist[u] = 0
                queue[tail] = u
                tail += 1
            else:
                dist[u] = inf
        found = False
        while head < tail:
            u = queue[head]
            head += 1
            for e in range(start[u], start[u + 1]):
                w = match_right[targets[e]]
                if w < 0:
                    found = True
                elif dist[w] == inf:
                    dist[w] = dist[u] + 1
                    queue[tail] = w
                    tail += 1
        if not found:
            break
        for u in range(n_left):
            cursor[u] = start[u]
        # augmenting paths along the layers, by an iterative depth-first search
        for root in range(n_left):
            if not active[root] or match_left[root] >= 0 or dist[root] != 0:
                continue
            depth = 0
            stack[0] = root
            while depth >= 0:
                u = stack[depth]
                if cursor[u] == start[u + 1]:
                    dist[u] = inf  # exhausted: no augmenting path through u in this phase
                    depth -= 1
                    continue
                v = targets[cursor[u]]
                cursor[u] += 1
                w = match_right[v]
                if w < 0:
                    # flip the path root → … → u → v
                    for level in range(depth, -1, -1):
                        left = stack[level]
                        previous = match_left[left]
                        match_left[left] = v
                        match_right[v] = left
                        v = previous
                    break
                if dist[w] == dist[u] + 1:
                    depth += 1
                    stack[depth] = w
    size = 0
    for u in range(n_left):
        if active[u] and match_left[u] >= 0:
            size += 1
    return size
