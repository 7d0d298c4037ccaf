"""``np.argsort`` (kind="quicksort") as NumPy 1.23 computes it, and a fast stable argsort.

GluonCV's VOC metric sorts scores with ``np.argsort`` (introsort, not stable), and with equal scores the visiting
order changes both the greedy matching and the precision curve. NumPy >= 1.25 sorts floats with SIMD code on
AVX-512/AVX2 machines, which orders ties differently from the NumPy 1.2x that GluonCV runs on.
:func:`legacy_argsort` therefore reproduces the permutation of NumPy 1.23's ``aquicksort`` exactly
(median-of-three quicksort, insertion sort below 17 items, heapsort past the depth limit). It only does that work
where the answer can differ: segments whose tied items are interchangeable are finished with a stable sort.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

__all__ = ["legacy_argsort", "legacy_descending", "stable_argsort", "SMALL_QUICKSORT"]

SMALL_QUICKSORT = 15  # segments with pr - pl <= 15 (at most 16 items) are insertion-sorted
_VECTOR_PARTITION_MIN = 128  # partition segments at least this long with NumPy, shorter ones in Python


def stable_argsort(values: np.ndarray, descending: bool = False) -> np.ndarray:
    """``np.argsort(values, kind="stable")`` (``[::-1]`` of it when ``descending``) for 1-D ``values``.

    float32 values and non-negative integers below 2**32 are sorted as packed ``uint64`` keys
    (order-preserving bits << 32 | position) with ``np.sort``, several times faster than NumPy's
    indirect stable sort; other dtypes fall back to it.
    """
    v = np.asarray(values)
    n = v.size
    if n < 2:
        return np.arange(n, dtype=np.int64)
    if v.dtype == np.float32:
        bits = (v + np.float32(0)).view(np.uint32)  # + 0 turns -0.0 into +0.0, which compares equal
        primary = np.where(bits >> np.uint32(31), ~bits, bits | np.uint32(0x80000000))
    elif v.dtype.kind in "iub" and v.min() >= 0 and v.max() < 2**16 and not descending:
        return np.argsort(v.astype(np.uint16), kind="stable")  # a radix sort
    elif v.dtype.kind in "iub" and n < 2**32 and v.min() >= 0 and v.max() < 2**32:
        primary = v.astype(np.uint32)
    else:
        order = np.argsort(v, kind="stable")
        return order[::-1].copy() if descending else order
    position = np.arange(n, dtype=np.uint64)
    if descending:  # reversed stable order: largest first, later position first among equals
        primary = ~primary
        position = position[::-1]
    keys = np.sort((primary.astype(np.uint64) << np.uint64(32)) | position)
    order = (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)
    return (n - 1 - order) if descending else order


def legacy_argsort(values: Any, key: Any = None) -> np.ndarray:
    """``np.argsort(values)`` as NumPy 1.23 computes it (introsort), for a 1-D array without NaN.

    Args:
        values: ``[K]`` numbers.
        key: optional ``[K]`` labels. When given, items with equal values *and* equal keys are treated as
            interchangeable and may come out in any order among themselves (this is what makes the
            function fast: only tie groups whose members differ in ``key`` are tracked exactly).
    Returns:
        ``int64 [K]`` permutation.
    """
    v = np.asarray(values)
    if v.ndim != 1:
        raise ValueError(f"legacy_argsort: values must be 1-D, got shape {v.shape}")
    if v.dtype.kind == "f" and np.isnan(v).any():
        raise ValueError("legacy_argsort: values contain NaN")
    n = v.size
    stable = stable_argsort(v)
    if n <= SMALL_QUICKSORT + 1:  # pure insertion sort, which is stable
        return stable
    sorted_v = v[stable]
    tie_with_next = sorted_v[1:] == sorted_v[:-1]
    if not tie_with_next.any():
        return stable
    new_value = np.concatenate(([True], ~tie_with_next))
    rank_sorted = np.cumsum(new_value) - 1
    starts = np.flatnonzero(new_value)
    if key is None:
        tracked = np.diff(np.append(starts, n)) >= 2
    else:
        k = np.asarray(key).reshape(-1)
        if k.shape != v.shape:
            raise ValueError(f"legacy_argsort: key shape {k.shape} differs from values shape {v.shape}")
        k_sorted = k[stable]
        tracked = np.minimum.reduceat(k_sorted, starts) != np.maximum.reduceat(k_sorted, starts)
    if not tracked.any():
        return stable
    ranks = np.empty(n, dtype=np.int64)
    ranks[stable] = rank_sorted
    tags = np.where(tracked[ranks], ranks, -1)
    perm = np.arange(n, dtype=np.int64)
    _introsort(ranks, tags, perm)
    # Every segment left "to sort" (insertion-sort leaves and interchangeable segments) is sorted here in
    # one stable pass: segments are value-ordered among themselves, so this sorts each one in place.
    return perm[stable_argsort(ranks[perm])]


def _introsort(ranks: np.ndarray, tags: np.ndarray, perm: np.ndarray) -> None:
    """Run NumPy 1.23's ``aquicksort_`` on ``perm`` (by ``ranks[perm]``) in place, partition by partition.

    Segments without two members of one tracked tie group are not followed further (nor pushed): their
    order is settled by the caller's final stable sort, as are NumPy's insertion-sorted leaves of at
    most 16 items (insertion sort is stable).
    """
    n = perm.size
    stack: list[tuple[int, int, int]] = []
    pl, pr = 0, n - 1
    cdepth = 2 * (n.bit_length() - 1)  # npy_get_msb(n) * 2
    while True:
        if cdepth < 0:
            _heapsort_segment(ranks, perm, pl, pr)
        else:
            while pr - pl > SMALL_QUICKSORT:
                if pr - pl + 1 >= _VECTOR_PARTITION_MIN:
                    pi = _partition_numpy(ranks, perm, pl, pr)
                else:
                    pi = _partition_python(ranks, perm, pl, pr)
                cdepth -= 1
                t = tags[perm[pl : pr + 1]]
                left_open = _has_tracked_pair(t[: pi - pl])
                right_open = _has_tracked_pair(t[pi - pl + 1 :])
                # NumPy keeps working on the smaller side and pushes the larger one.
                if pi - pl < pr - pi:
                    if right_open:
                        stack.append((pi + 1, pr, cdepth))
                    pr, still_open = pi - 1, left_open
                else:
                    if left_open:
                        stack.append((pl, pi - 1, cdepth))
                    pl, still_open = pi + 1, right_open
                if not still_open:
                    break
        if not stack:
            return
        pl, pr, cdepth = stack.pop()


def _has_tracked_pair(tags: np.ndarray) -> bool:
    """True when two of ``tags`` (>= 0 for members of tracked tie groups) name the same group."""
    t = tags[tags >= 0]
    if t.size < 2:
        return False
    t.sort()
    return bool((t[1:] == t[:-1]).any())


def _swapper(seg: Any, val: Any) -> Callable[[int, int], None]:
    """``swap(i, j)`` exchanging items i and j of a segment (``seg`` the permutation, ``val`` its ranks)."""

    def swap(i: int, j: int) -> None:
        seg[i], seg[j] = seg[j], seg[i]
        val[i], val[j] = val[j], val[i]

    return swap


def _median_of_three(val: Any, swap: Callable[[int, int], None], hi: int) -> int:
    """NumPy's pivot choice: order items ``0, hi // 2, hi`` of the segment; returns the middle (pivot) position."""
    m = hi >> 1
    if val[m] < val[0]:
        swap(m, 0)
    if val[hi] < val[m]:
        swap(hi, m)
    if val[m] < val[0]:
        swap(m, 0)
    return m


def _partition_python(ranks: np.ndarray, perm: np.ndarray, pl: int, pr: int) -> int:
    """One quicksort partition of ``perm[pl:pr + 1]`` item by item; returns the pivot's final index."""
    seg = perm[pl : pr + 1].tolist()
    val = ranks[seg].tolist()
    swap = _swapper(seg, val)
    hi = pr - pl
    m = _median_of_three(val, swap, hi)
    vp = val[m]
    i, j = 0, hi - 1
    swap(m, j)
    while True:
        i += 1
        while val[i] < vp:
            i += 1
        j -= 1
        while vp < val[j]:
            j -= 1
        if i >= j:
            break
        swap(i, j)
    swap(i, hi - 1)
    perm[pl : pr + 1] = seg
    return pl + i


def _partition_numpy(ranks: np.ndarray, perm: np.ndarray, pl: int, pr: int) -> int:
    """The same partition as :func:`_partition_python`, with the scan-and-swap loop vectorised.

    The left scan stops at the items ``>= pivot`` (positions ``ge``, ascending), the right scan at the
    items ``<= pivot`` (positions ``le``, descending); the k-th exchange swaps ``ge[k]`` and ``le[k]``
    until the scans cross at the first k with ``ge[k] >= le[k]``. The left scan then ends on
    ``min(ge[k], le[k - 1])`` (``le[k - 1]`` holds a swapped-in item ``>= pivot``).
    """
    seg = perm[pl : pr + 1]  # a view: swaps write through to perm
    val = ranks[seg]
    swap = _swapper(seg, val)
    hi = pr - pl
    m = _median_of_three(val, swap, hi)
    vp = val[m]
    swap(m, hi - 1)
    ge = np.flatnonzero(val[1:hi] >= vp) + 1
    le = np.flatnonzero(val[: hi - 1] <= vp)[::-1]
    k = min(ge.size, le.size)
    crossed = int(np.argmax(ge[:k] >= le[:k]))  # always exists: ge ends at hi - 1, le ends at 0
    if crossed:
        left, right = ge[:crossed], le[:crossed]
        moved = seg[left].copy()
        seg[left] = seg[right]
        seg[right] = moved
        pi = int(min(ge[crossed], le[crossed - 1]))
    else:
        pi = int(ge[0])
    seg[pi], seg[hi - 1] = seg[hi - 1], seg[pi]
    return pl + pi


def _heapsort_segment(ranks: np.ndarray, perm: np.ndarray, pl: int, pr: int) -> None:
    """NumPy's ``aheapsort_`` on ``perm[pl:pr + 1]`` (the introsort fallback); 1-based heap indices."""
    n = pr - pl + 1
    if n < 2:
        return
    heap = [0] + perm[pl : pr + 1].tolist()
    val = dict(zip(heap[1:], ranks[heap[1:]].tolist()))

    def sift(item: int, i: int, size: int) -> None:
        j = 2 * i
        while j <= size:
            if j < size and val[heap[j]] < val[heap[j + 1]]:
                j += 1
            if val[item] < val[heap[j]]:
                heap[i] = heap[j]
                i = j
                j += j
            else:
                break
        heap[i] = item

    for top in range(n >> 1, 0, -1):
        sift(heap[top], top, n)
    size = n
    while size > 1:
        item = heap[size]
        heap[size] = heap[1]
        size -= 1
        sift(item, 1, size)
    perm[pl : pr + 1] = heap[1:]


def legacy_descending(scores: np.ndarray, key: Any = None) -> np.ndarray:
    """GluonCV's ``scores.argsort()[::-1]``."""
    return legacy_argsort(scores, key)[::-1]
