"""Compiled kernels of the boundary benchmark (numba): thinning, non-maximum suppression, matching.

Written from the published definitions: MATLAB's ``bwmorph(..., 'thin', Inf)`` (Lam, Lee and
Suen 1992, the two-subiteration rule), Piotr Dollár's ``edgesNmsMex`` (bilinear comparison along
the edge normal, a 1.01 margin, boundary fade), and a maximum-cardinality bipartite matching
(Hopcroft–Karp) between prediction and ground-truth pixels closer than the match distance.
"""

from __future__ import annotations

import math

import numba
import numpy as np

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
def _code(mask, r, c, dr, dc):
    height, width = mask.shape
    code = 0
    for i in range(8):
        rr, cc = r + dr[i], c + dc[i]
        if 0 <= rr < height and 0 <= cc < width and mask[rr, cc]:
            code |= 1 << i
    return code


@numba.njit(cache=True)
def thin(mask, first, second, dr, dc):
    """Thin a boolean mask to one-pixel lines until nothing changes (``bwmorph(mask, 'thin', Inf)``)."""
    out = mask.copy()
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


@numba.njit(cache=True)
def _interp(image, row, col):
    height, width = image.shape
    col = min(max(col, 0.0), width - 1.001)
    row = min(max(row, 0.0), height - 1.001)
    c0, r0 = int(col), int(row)
    dc0, dr0 = col - c0, row - r0
    dc1, dr1 = 1 - dc0, 1 - dr0
    return (image[r0, c0] * dc1 * dr1 + image[r0, c0 + 1] * dc0 * dr1
            + image[r0 + 1, c0] * dc1 * dr0 + image[r0 + 1, c0 + 1] * dc0 * dr0)


@numba.njit(cache=True)
def nms(edges, orientation, radius, border, margin):
    """Zero pixels weaker than ``margin`` × a neighbour along the normal; fade ``border`` pixels at the sides."""
    height, width = edges.shape
    out = np.zeros_like(edges)
    for r in range(height):
        for c in range(width):
            e = edges[r, c]
            out[r, c] = e
            if e == 0:
                continue
            e = e * margin
            co, si = math.cos(orientation[r, c]), math.sin(orientation[r, c])
            for d in range(-radius, radius + 1):
                if d != 0 and e < _interp(edges, r + d * si, c + d * co):
                    out[r, c] = 0
                    break
    s = min(border, width // 2, height // 2)
    for c in range(s):
        for r in range(height):
            out[r, c] *= c / s
            out[r, width - 1 - c] *= c / s
    for c in range(width):
        for r in range(s):
            out[r, c] *= r / s
            out[height - 1 - r, c] *= r / s
    return out


@numba.njit(cache=True)
def neighbour_lists(candidate_rows, candidate_cols, gt_index, offset_rows, offset_cols):
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
def max_matching(active, start, targets, n_right, match_left, match_right):
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
