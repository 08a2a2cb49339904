"""Exact path-dependent TreeSHAP for a booster's trees, a few microseconds per tree and row.

``Booster.predict(pred_contribs=True)`` runs Lundberg's recursive TreeSHAP: about 7 ms for one row
of a 300-tree depth-6 model, several times a single-row request. The same values come from a
per-leaf table (the idea of Fast TreeSHAP v2, Yang 2021). For a leaf ``l`` with value ``v`` whose
path splits on the distinct features ``P`` (``d = |P|``), let ``z_j`` be the product of the cover
ratios (child / parent ``sum_hessian``) of the path's splits on feature ``j``, and ``o_j`` be 1
when the row follows every one of them. Then, with ``w(s) = s! (d - s - 1)! / d!``::

    phi_i += v (o_i - z_i) sum_{S in P - {i}} w(|S|) prod_{j in S} o_j prod_{j in P - S - {i}} z_j
           = v (o_i - z_i) / z_i F_l(B - {i})

where ``B`` is the set of path features the row follows and
``F_l(B) = sum_{S subset of B} w(|S|) prod_{j in P - S} z_j`` is tabulated once per leaf for all
``2^d`` sets. A row then costs one pass over the leaves' paths: no recursion. The bias is the
cover-weighted mean of the leaf values (XGBoost's node mean values) plus ``base_score``; the
decisions are :mod:`kubeloop.serving.forest`'s (float32 comparisons, missing values to
``default_left``).

:meth:`TreeShap.from_booster` raises ``ValueError`` for what it does not handle (other boosters,
categorical splits, a zero cover, tables larger than ``max_entries``); callers then use XGBoost.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numba
import numpy as np
import xgboost

from kubeloop.bundle.models import SUPPORTED_OBJECTIVES, booster_floats

__all__ = ["TreeShap"]

_MAX_ENTRIES = 1 << 22  # table entries (float64): 32 MiB


@numba.njit(nogil=True, cache=False)
def _contributions(
    X: np.ndarray,
    node_feature: np.ndarray,
    node_threshold: np.ndarray,
    node_default_left: np.ndarray,
    tree_nodes: np.ndarray,
    leaf_tree: np.ndarray,
    leaf_group: np.ndarray,
    leaf_value: np.ndarray,
    path_start: np.ndarray,
    path_node: np.ndarray,
    path_left: np.ndarray,
    path_slot: np.ndarray,
    slot_start: np.ndarray,
    slot_feature: np.ndarray,
    slot_zero: np.ndarray,
    table_start: np.ndarray,
    table: np.ndarray,
    bias: np.ndarray,
) -> np.ndarray:
    n, width = X.shape
    groups = bias.shape[0]
    out = np.zeros((n, groups, width + 1))
    left = np.zeros(node_feature.shape[0], dtype=np.bool_)
    for r in range(n):
        for node in range(node_feature.shape[0]):  # every split's decision, once per row
            f = node_feature[node]
            if f < 0:
                continue
            value = np.float64(np.float32(X[r, f]))
            if value != value:
                left[node] = node_default_left[node]
            else:
                left[node] = value < node_threshold[node]
        for leaf in range(leaf_value.shape[0]):
            d = slot_start[leaf + 1] - slot_start[leaf]
            if d == 0:
                continue
            offset = tree_nodes[leaf_tree[leaf]]
            followed = (1 << d) - 1
            for k in range(path_start[leaf], path_start[leaf + 1]):
                if left[offset + path_node[k]] != path_left[k]:
                    followed &= ~(1 << path_slot[k])
            v = leaf_value[leaf]
            g = leaf_group[leaf]
            base = table_start[leaf]
            for u in range(d):
                slot = slot_start[leaf] + u
                z = slot_zero[slot]
                o = (followed >> u) & 1
                out[r, g, slot_feature[slot]] += (
                    v * (o - z) / z * table[base + (followed & ~(1 << u))]
                )
        for g in range(groups):
            out[r, g, width] = bias[g]
    return out


@numba.njit(nogil=True, cache=False)
def _leaf_table(zero: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``F(B)`` for every subset ``B`` (bit mask) of the ``d`` path features."""
    d = zero.shape[0]
    size = 1 << d
    table = np.empty(size)
    for subset in range(size):  # t(S) = w(|S|) * prod_{j not in S} z_j
        term = 1.0
        count = 0
        for j in range(d):
            if (subset >> j) & 1:
                count += 1
            else:
                term *= zero[j]
        table[subset] = term * weights[min(count, weights.shape[0] - 1)]
    for j in range(d):  # subset sums: F(B) = sum over S within B
        bit = 1 << j
        for subset in range(size):
            if subset & bit:
                table[subset] += table[subset ^ bit]
    return table


class TreeShap:
    """TreeSHAP contributions of one booster, laid out as ``pred_contribs`` with
    ``strict_shape=True``: ``(rows, groups, features + 1)``, the bias last."""

    def __init__(self, arrays: dict[str, np.ndarray], n_features: int) -> None:
        self._arrays = arrays
        self.n_features = n_features

    @classmethod
    def from_booster(cls, booster: xgboost.Booster, *, max_entries: int = _MAX_ENTRIES) -> TreeShap:
        """Tabulate every leaf of ``booster`` (see the module docstring).

        Raises:
            ValueError: The booster or its size is not supported.
        """
        learner = json.loads(bytes(booster.save_raw("json")))["learner"]
        objective = learner["objective"]["name"]
        if objective not in SUPPORTED_OBJECTIVES:
            raise ValueError(f"objective {objective!r} is not supported")
        if learner["gradient_booster"]["name"] != "gbtree":
            raise ValueError("only gbtree boosters are supported")
        params = learner["learner_model_param"]
        n_features = int(params["num_feature"])
        groups = max(1, int(params.get("num_class", "0")))
        model = learner["gradient_booster"]["model"]
        base = np.array(booster_floats(params["base_score"]), dtype=np.float64)
        if objective == "binary:logistic":
            base = np.array([-math.log(1.0 / float(p) - 1.0) for p in base])
        bias = np.broadcast_to(base, (groups,)).astype(np.float64)
        build = _Builder(max_entries)
        for index, tree in enumerate(model["trees"]):
            group = int(model["tree_info"][index])
            bias[group] += build.add_tree(tree, group)
        return cls({**build.arrays(), "bias": bias}, n_features)

    def contributions(self, X: np.ndarray) -> np.ndarray:
        """``(rows, groups, features + 1)`` contributions in margin space; the bias last."""
        x = np.ascontiguousarray(X, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected a (rows, {self.n_features}) matrix; got {x.shape}")
        a = self._arrays
        return np.asarray(
            _contributions(
                x, a["node_feature"], a["node_threshold"], a["node_default_left"],
                a["tree_nodes"], a["leaf_tree"], a["leaf_group"], a["leaf_value"],
                a["path_start"], a["path_node"], a["path_left"], a["path_slot"],
                a["slot_start"], a["slot_feature"], a["slot_zero"], a["table_start"],
                a["table"], a["bias"],
            )
        )  # fmt: skip


class _Builder:
    """Flat arrays of every tree's splits and every leaf's path and table."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.lists: dict[str, list[Any]] = {
            name: []
            for name in (
                "node_feature", "node_threshold", "node_default_left", "tree_nodes",
                "leaf_tree", "leaf_group", "leaf_value", "path_node", "path_left", "path_slot",
                "slot_feature", "slot_zero", "tables",
            )
        }  # fmt: skip
        self.path_start, self.slot_start, self.table_start = [0], [0], [0]
        self.trees = 0
        self._left: list[int] = []
        self._right: list[int] = []

    def add_tree(self, tree: dict[str, Any], group: int) -> float:
        """Add one tree; returns its expected value (cover-weighted mean of the leaves)."""
        if any(int(t) != 0 for t in tree.get("split_type", [])):
            raise ValueError("categorical splits are not supported")
        left, right = tree["left_children"], tree["right_children"]
        feature, condition = tree["split_indices"], tree["split_conditions"]
        cover, default_left = tree["sum_hessian"], tree["default_left"]
        lists = self.lists
        lists["tree_nodes"].append(len(lists["node_feature"]))
        for node in range(len(left)):
            leaf = left[node] < 0
            lists["node_feature"].append(-1 if leaf else int(feature[node]))
            lists["node_threshold"].append(float(np.float32(condition[node])))
            lists["node_default_left"].append(bool(default_left[node]))
        self._left, self._right = left, right
        tree_index = self.trees
        self.trees += 1

        def mean(node: int) -> float:
            if left[node] < 0:
                return float(condition[node])
            total = float(cover[node])
            if total <= 0:
                raise ValueError("a split node has no cover")
            return (
                float(cover[left[node]]) * mean(left[node])
                + float(cover[right[node]]) * mean(right[node])
            ) / total

        stack: list[tuple[int, list[tuple[int, bool]]]] = [(0, [])]
        while stack:
            node, path = stack.pop()
            if left[node] >= 0:
                stack.append((right[node], [*path, (node, False)]))
                stack.append((left[node], [*path, (node, True)]))
                continue
            self._add_leaf(tree_index, group, float(condition[node]), path, feature, cover)
        return mean(0)

    def _add_leaf(
        self,
        tree: int,
        group: int,
        value: float,
        path: list[tuple[int, bool]],
        feature: list[int],
        cover: list[float],
    ) -> None:
        lists = self.lists
        slots: dict[int, int] = {}
        zero: list[float] = []
        for node, goes_left in path:
            child_cover = cover[self._child(node, goes_left)]
            ratio = float(child_cover) / float(cover[node]) if cover[node] > 0 else 0.0
            if ratio <= 0:
                raise ValueError("a path has a zero cover ratio")
            slot = slots.setdefault(int(feature[node]), len(slots))
            if slot == len(zero):
                zero.append(ratio)
            else:
                zero[slot] *= ratio
            lists["path_node"].append(node)
            lists["path_left"].append(goes_left)
            lists["path_slot"].append(slot)
        d = len(zero)
        lists["leaf_tree"].append(tree)
        lists["leaf_group"].append(group)
        lists["leaf_value"].append(value)
        lists["slot_feature"].extend(slots)
        lists["slot_zero"].extend(zero)
        self.path_start.append(len(lists["path_node"]))
        self.slot_start.append(len(lists["slot_zero"]))
        size = 1 << d
        if self.table_start[-1] + size > self.max_entries:
            raise ValueError(f"TreeSHAP tables would exceed {self.max_entries} entries")
        weights = np.array(
            [math.factorial(s) * math.factorial(d - s - 1) / math.factorial(d) for s in range(d)]
            or [1.0],
            dtype=np.float64,
        )
        lists["tables"].append(_leaf_table(np.array(zero, dtype=np.float64), weights))
        self.table_start.append(self.table_start[-1] + size)

    def _child(self, node: int, goes_left: bool) -> int:
        return int(self._left[node] if goes_left else self._right[node])

    def arrays(self) -> dict[str, np.ndarray]:
        """The flat arrays the kernel reads."""
        lists = self.lists
        return {
            "node_feature": np.array(lists["node_feature"], dtype=np.int64),
            "node_threshold": np.array(lists["node_threshold"], dtype=np.float64),
            "node_default_left": np.array(lists["node_default_left"], dtype=np.bool_),
            "tree_nodes": np.array(lists["tree_nodes"], dtype=np.int64),
            "leaf_tree": np.array(lists["leaf_tree"], dtype=np.int64),
            "leaf_group": np.array(lists["leaf_group"], dtype=np.int64),
            "leaf_value": np.array(lists["leaf_value"], dtype=np.float64),
            "path_start": np.array(self.path_start, dtype=np.int64),
            "path_node": np.array(lists["path_node"], dtype=np.int64),
            "path_left": np.array(lists["path_left"], dtype=np.bool_),
            "path_slot": np.array(lists["path_slot"], dtype=np.int64),
            "slot_start": np.array(self.slot_start, dtype=np.int64),
            "slot_feature": np.array(lists["slot_feature"], dtype=np.int64),
            "slot_zero": np.array(lists["slot_zero"], dtype=np.float64),
            "table_start": np.array(self.table_start[:-1], dtype=np.int64),
            "table": (
                np.concatenate(lists["tables"]) if lists["tables"] else np.zeros(1, np.float64)
            ),
        }
