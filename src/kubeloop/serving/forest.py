"""A booster's trees as flat arrays walked by a small compiled kernel, for a few rows at a time.

``Booster.inplace_predict`` costs about 0.3 ms per call whatever the model size (XGBoost sets up a
DMatrix proxy and reads the CPU quota per call), more than the rest of a single-row request.
:class:`CompiledForest` reads the booster's JSON model once into flat arrays, and a numba kernel
walks every tree for a row: a 300-tree depth-6 model takes about 10 us per row (a numpy walk, one
vectorised step per depth level, took 35-45 us: its 40 numpy calls cost more than the work). The
kernel walks one level of every tree before the next, so the trees' independent node loads
overlap instead of waiting on each other. For large batches XGBoost is faster; callers pick by
row count. The kernel is compiled on first use (about a second) and cached on disk where it can be
(see :func:`_kernel`).

The rules are XGBoost's: features are compared in float32, a row goes left when
``x < split_condition``, a missing value (NaN) follows the node's ``default_left``; a leaf's value
is its ``split_conditions`` entry; leaf values are summed per output group (``tree_info``) in
every round (random-forest mode: ``num_parallel_tree`` trees per round and group, summed as
well), ``base_score`` is added in margin space and the objective's transform applied.

Only plain ``gbtree`` boosters with numeric splits and one of the objectives kubeloop trains
(``binary:logistic``, ``multi:softprob``, ``reg:squarederror``) are compiled;
:meth:`CompiledForest.from_booster` raises ``ValueError`` for anything else.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
import xgboost

from kubeloop.bundle.models import SUPPORTED_OBJECTIVES, booster_floats

__all__ = ["SUPPORTED_OBJECTIVES", "CompiledForest"]

_LINE = 64  # bytes in a cache line


def _kernel(function: Callable[..., Any]) -> Any:
    """``function`` compiled on first use, nogil (request threads may walk trees at once), its
    machine code cached on disk where numba finds a writable place (``__pycache__`` beside this
    file, ``NUMBA_CACHE_DIR``, the user's cache directory) and compiled per process where none
    is (numba needs write access even to read its cache: a read-only install without a writable
    home or ``NUMBA_CACHE_DIR`` compiles every time)."""
    try:
        return numba.njit(nogil=True, cache=True)(function)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(function)


@_kernel
def _margins(
    X: np.ndarray,
    records: np.ndarray,
    values: np.ndarray,
    roots: np.ndarray,
    depth: int,
    base_margin: np.ndarray,
) -> np.ndarray:
    """Raw scores ``(n, K)``: see :class:`CompiledForest` for the layout of ``records``
    (``values`` is the same memory read as float32)."""
    n, width = X.shape
    n_groups = base_margin.shape[0]
    per_group = roots.shape[0] // n_groups
    out = np.empty((n, n_groups))
    row = np.empty(2 * width)
    node = np.empty(roots.shape[0], np.int64)
    for i in range(n):
        for j in range(width):
            value = np.float64(np.float32(X[i, j]))  # XGBoost compares in float32
            if value != value:  # missing: -inf goes left (first half), +inf right (second)
                row[j], row[width + j] = -np.inf, np.inf
            else:
                row[j], row[width + j] = value, value
        node[:] = roots
        for _ in range(depth):  # one level of every tree, then the next: loads overlap
            for t in range(node.shape[0]):
                k = node[t]
                node[t] = records[k, 2 + (row[records[k, 0]] >= values[k, 1])]
        for g in range(n_groups):
            total = base_margin[g]
            for t in range(g * per_group, (g + 1) * per_group):
                total += values[node[t], 1]  # leaves hold their value
            out[i, g] = total
    return out


class CompiledForest:
    """All trees of one booster in flat arrays, walked by a compiled kernel.

    Build it with :meth:`from_booster`. Nodes of all trees are concatenated (trees sorted by
    output group) into one record of four 32-bit fields each, ``[column, split, left, right]``:
    16 bytes, four to a 64-byte cache line (the array starts on a line), so one step of the walk
    is one line read -- feature -> value -> compare -> child, with no branching -- and the top
    levels of a tree share lines. A 300-tree depth-6 forest takes 0.6 MB (1.8 MB with the
    earlier two 24-byte slots per node, and a row walked 40 % slower).

    Args:
        feature: ``(M,)`` column of the extended row each node reads (``f`` when missing values
            go left, ``F + f`` when they go right: the kernel's row holds each value twice, a
            missing one as -inf then +inf, so the missing-value rule costs nothing per step).
        split: ``(M,)`` float32 split conditions, and a leaf's value.
        left: ``(M,)`` flat index of each node's left child; leaves point to themselves.
        right: ``(M,)`` the same for the right child.
        roots: ``(T,)`` flat index of each tree's root, trees sorted by group.
        depth: Levels to walk (the deepest tree's depth).
        n_features: Input columns ``F``.
        n_groups: Output groups ``K`` (classes for ``multi:softprob``, else 1).
        base_margin: ``(K,)`` ``base_score`` in margin space.
        objective: One of :data:`SUPPORTED_OBJECTIVES`.

    Attributes:
        cost: Trees x depth, the work per row: callers choose between this and XGBoost by
            ``rows * cost``.
    """

    def __init__(
        self,
        *,
        feature: np.ndarray,
        split: np.ndarray,
        left: np.ndarray,
        right: np.ndarray,
        roots: np.ndarray,
        depth: int,
        n_features: int,
        n_groups: int,
        base_margin: np.ndarray,
        objective: str,
    ) -> None:
        if objective not in SUPPORTED_OBJECTIVES:
            raise ValueError(f"objective {objective!r} is not supported")
        if len(roots) % n_groups:
            raise ValueError(f"{len(roots)} trees do not split evenly into {n_groups} groups")
        # Split conditions are float32 (XGBoost's) and so are the values they are compared
        # with, widened to float64 in the kernel: the same order as in float32. Leaf values are
        # XGBoost's float32 too. The walk ends on leaves: they point to themselves.
        size = len(feature)
        memory = np.empty(4 * size + _LINE // 4, dtype=np.int32)
        start = (-memory.ctypes.data % _LINE) // 4  # the first record on a cache line
        records = memory[start : start + 4 * size].reshape(size, 4)
        records[:, 0] = feature
        records[:, 1] = np.asarray(split, dtype=np.float32).view(np.int32)
        records[:, 2] = left
        records[:, 3] = right
        self._records = records
        self._values = records.view(np.float32)  # column 1 read as float32
        self._roots = np.ascontiguousarray(roots, dtype=np.int64)
        self._depth = depth
        self.cost = len(roots) * max(depth, 1)
        self.n_features = n_features
        self.n_groups = n_groups
        self._base_margin = np.ascontiguousarray(base_margin, dtype=np.float64)
        self.objective = objective

    @classmethod
    def from_booster(cls, booster: xgboost.Booster) -> CompiledForest:
        """Compile ``booster`` from its JSON model (``booster.save_raw("json")``).

        Raises:
            ValueError: The booster is not a plain tree booster with numeric splits and a
                supported objective (the caller should keep ``inplace_predict``).
        """
        learner = json.loads(bytes(booster.save_raw("json")))["learner"]
        objective = learner["objective"]["name"]
        params = learner["learner_model_param"]
        if learner["gradient_booster"]["name"] != "gbtree":
            raise ValueError(f"booster {learner['gradient_booster']['name']!r} is not gbtree")
        if int(params.get("num_target", "1")) != 1:
            raise ValueError("multi-target boosters are not supported")
        n_features = int(params["num_feature"])
        n_groups = max(1, int(params.get("num_class", "0")))
        if (objective == "multi:softprob") != (n_groups > 1):
            raise ValueError(f"objective {objective!r} with {n_groups} output groups")
        model = learner["gradient_booster"]["model"]
        trees, groups = model["trees"], [int(g) for g in model["tree_info"]]
        order = sorted(range(len(trees)), key=lambda i: groups[i])  # stable: rounds keep order
        if any(groups.count(g) != len(trees) // n_groups for g in range(n_groups)):
            raise ValueError("output groups hold different numbers of trees")
        feature, split, left, right, roots = [], [], [], [], []
        depth, offset = 0, 0
        for index in order:
            tree = trees[index]
            if any(int(t) != 0 for t in tree["split_type"]):
                raise ValueError("categorical splits are not supported")
            nodes = _tree_nodes(tree, offset, n_features)
            feature.append(nodes["feature"])
            split.append(nodes["split"])
            left.append(nodes["left"])
            right.append(nodes["right"])
            depth = max(depth, nodes["depth"])
            roots.append(offset)
            offset += len(tree["left_children"])
        base = np.array(booster_floats(params["base_score"]), dtype=np.float64)
        if objective == "binary:logistic":  # stored as a probability
            base = np.array([-math.log(1.0 / float(p) - 1.0) for p in base])
        return cls(
            feature=np.concatenate(feature) if feature else np.zeros(0, np.intp),
            split=np.concatenate(split) if split else np.zeros(0, np.float32),
            left=np.concatenate(left) if left else np.zeros(0, np.intp),
            right=np.concatenate(right) if right else np.zeros(0, np.intp),
            roots=np.array(roots, dtype=np.intp),
            depth=depth,
            n_features=n_features,
            n_groups=n_groups,
            base_margin=np.broadcast_to(base, (n_groups,)).copy(),
            objective=objective,
        )

    def margin(self, X: np.ndarray) -> np.ndarray:
        """Raw scores ``(n, K)`` before the objective's transform (``base_score`` included)."""
        x = np.ascontiguousarray(X, dtype=np.float64)  # one kernel signature: no recompiling
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected a (rows, {self.n_features}) matrix; got {x.shape}")
        return np.asarray(
            _margins(x, self._records, self._values, self._roots, self._depth, self._base_margin)
        )

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict like :meth:`kubeloop.bundle.models.XGBoostModel.predict`.

        Returns:
            ``(n,)`` positive-class probabilities (``binary:logistic``), ``(n, K)`` class
            probabilities (``multi:softprob``) or ``(n,)`` values (``reg:squarederror``).
        """
        z = self.margin(X)
        if len(z) == 1 and self.n_groups == 1:  # one row, one output: Python floats
            total = float(z[0, 0])
            if self.objective == "reg:squarederror":
                return np.array([total])
            return np.array([1.0 / (1.0 + math.exp(-total)) if total > -700.0 else 0.0])
        if self.objective == "binary:logistic":
            return np.asarray(1.0 / (1.0 + np.exp(-z[:, 0])))
        if self.objective == "reg:squarederror":
            return np.asarray(z[:, 0])
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return np.asarray(e / e.sum(axis=1, keepdims=True))


def _tree_nodes(tree: dict[str, Any], offset: int, n_features: int) -> dict[str, Any]:
    """One tree's nodes in the layout of :class:`CompiledForest` (flat ids from
    ``offset``), and the tree's depth."""
    left = np.asarray(tree["left_children"], dtype=np.intp)
    right = np.asarray(tree["right_children"], dtype=np.intp)
    size = len(left)
    leaf = left < 0
    own = np.arange(size, dtype=np.intp)
    left = np.where(leaf, own, left) + offset
    right = np.where(leaf, own, right) + offset
    column = np.asarray(tree["split_indices"], dtype=np.intp)
    if np.any(column[~leaf] >= n_features) or np.any(column < 0):
        raise ValueError("a split reads a feature beyond num_feature")
    goes_right = ~np.asarray(tree["default_left"], dtype=bool)
    column = np.where(leaf, 0, column + n_features * goes_right)
    condition = np.asarray(tree["split_conditions"], dtype=np.float32)
    depth, level, frontier = 0, 0, [0] if size else []
    while frontier:  # breadth first from the root: unreachable (deleted) nodes do not count
        depth, level = level, level + 1
        frontier = [
            int(child) - offset
            for node in frontier
            if not leaf[node]
            for child in (left[node], right[node])
        ]
        if level > size:
            raise ValueError("a tree has a cycle")
    return {"feature": column, "split": condition, "left": left, "right": right, "depth": depth}
