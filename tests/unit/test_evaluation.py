"""Unit tests of kubeloop.training.evaluation: metrics against scikit-learn, plots on disk."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest
from sklearn import metrics as skm

from kubeloop.errors import DataValidationError
from kubeloop.training.evaluation import evaluate, validation_score, write_plots

SVG = "{http://www.w3.org/2000/svg}"

# Eight rows, hand-checkable: at 0.5 the predictions are 0 0 1 1 | 0 1 1 1
# for the truth 0 0 0 0 | 1 1 1 1.
Y_BIN = np.array([0, 0, 0, 0, 1, 1, 1, 1])
P_BIN = np.array([0.1, 0.4, 0.6, 0.5, 0.3, 0.7, 0.8, 0.9])

Y_MULTI = np.array([0, 1, 2, 2, 1, 0])
P_MULTI = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.2, 0.5, 0.3],
        [0.1, 0.3, 0.6],
        [0.3, 0.4, 0.3],
        [0.1, 0.8, 0.1],
        [0.4, 0.4, 0.2],
    ]
)

Y_REG = np.array([1.0, 2.0, 3.0, 4.0])
P_REG = np.array([1.5, 2.0, 2.0, 5.0])


def test_binary_metrics_match_sklearn_and_hand_counts() -> None:
    result = evaluate("classification", Y_BIN, P_BIN, classes=("No", "Yes"))
    # Value 0.5 is at the threshold, so it counts as positive: TN=2 FP=2 FN=1 TP=3.
    assert result["confusion_matrix"] == [[2, 2], [1, 3]]
    assert result["accuracy"] == pytest.approx(5 / 8)
    assert result["precision"] == pytest.approx(3 / 5)
    assert result["recall"] == pytest.approx(3 / 4)
    assert result["f1"] == pytest.approx(skm.f1_score(Y_BIN, P_BIN >= 0.5))
    assert result["roc_auc"] == pytest.approx(skm.roc_auc_score(Y_BIN, P_BIN))
    assert result["pr_auc"] == pytest.approx(skm.average_precision_score(Y_BIN, P_BIN))
    assert result["log_loss"] == pytest.approx(skm.log_loss(Y_BIN, P_BIN))
    assert result["threshold"] == 0.5
    json.dumps(result, allow_nan=False)  # plain JSON values only
    assert all(type(v) is float for k, v in result.items() if k != "confusion_matrix")


def test_binary_threshold_moves_the_confusion_matrix() -> None:
    result = evaluate("classification", Y_BIN, P_BIN, threshold=0.75)
    assert result["confusion_matrix"] == [[4, 0], [2, 2]]
    assert result["precision"] == pytest.approx(1.0)
    assert result["threshold"] == 0.75


def test_multiclass_metrics_are_macro_and_one_vs_rest() -> None:
    result = evaluate("classification", Y_MULTI, P_MULTI, classes=("a", "b", "c"))
    predicted = P_MULTI.argmax(axis=1)
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(Y_MULTI, predicted))
    for name, fn in (("precision", skm.precision_score), ("recall", skm.recall_score)):
        assert result[name] == pytest.approx(fn(Y_MULTI, predicted, average="macro"))
    assert result["f1"] == pytest.approx(skm.f1_score(Y_MULTI, predicted, average="macro"))
    expected_auc = skm.roc_auc_score(Y_MULTI, P_MULTI, multi_class="ovr", average="macro")
    assert result["roc_auc"] == pytest.approx(expected_auc)
    onehot = np.eye(3)[Y_MULTI]
    assert result["pr_auc"] == pytest.approx(
        skm.average_precision_score(onehot, P_MULTI, average="macro")
    )
    assert result["log_loss"] == pytest.approx(skm.log_loss(Y_MULTI, P_MULTI))
    assert result["confusion_matrix"] == skm.confusion_matrix(Y_MULTI, predicted).tolist()
    assert result["threshold"] is None


def test_regression_metrics() -> None:
    result = evaluate("regression", Y_REG, P_REG)
    assert result["mae"] == pytest.approx((0.5 + 0 + 1 + 1) / 4)
    assert result["rmse"] == pytest.approx(np.sqrt((0.25 + 0 + 1 + 1) / 4))
    assert result["r2"] == pytest.approx(skm.r2_score(Y_REG, P_REG))
    assert set(result) == {"rmse", "mae", "r2"}


def test_single_class_labels_give_none_not_nan() -> None:
    result = evaluate("classification", np.zeros(4, dtype=int), np.array([0.1, 0.2, 0.3, 0.9]))
    assert result["roc_auc"] is None
    assert result["pr_auc"] is None
    json.dumps(result, allow_nan=False)


@pytest.mark.parametrize(
    ("task", "y", "p", "expected"),
    [
        ("classification", Y_BIN, P_BIN, skm.roc_auc_score(Y_BIN, P_BIN)),
        ("classification", Y_MULTI, P_MULTI, -skm.log_loss(Y_MULTI, P_MULTI)),
        ("regression", Y_REG, P_REG, -np.sqrt(skm.mean_squared_error(Y_REG, P_REG))),
    ],
)
def test_validation_score_higher_is_better(
    task: str, y: np.ndarray, p: np.ndarray, expected: float
) -> None:
    assert validation_score(task, y, p) == pytest.approx(expected)  # type: ignore[arg-type]


def test_validation_score_ranks_a_better_model_higher() -> None:
    worse = validation_score("regression", Y_REG, Y_REG + 2.0)
    better = validation_score("regression", Y_REG, Y_REG + 0.5)
    assert better > worse


def test_validation_score_refuses_one_class() -> None:
    with pytest.raises(DataValidationError, match="single class"):
        validation_score("classification", np.ones(3, dtype=int), np.array([0.2, 0.5, 0.9]))


@pytest.mark.parametrize(
    ("y", "p", "match"),
    [
        (Y_BIN, P_BIN[:5], "5 rows but y_true has 8"),
        (Y_BIN + 1, P_BIN, "outside 0..1"),
        (Y_BIN, np.where(P_BIN > 0.5, np.nan, P_BIN), "NaN"),
    ],
)
def test_bad_classification_input(y: np.ndarray, p: np.ndarray, match: str) -> None:
    with pytest.raises(DataValidationError, match=match):
        evaluate("classification", y, p)


def test_wrong_number_of_class_names() -> None:
    with pytest.raises(DataValidationError, match="3 class names"):
        evaluate("classification", Y_BIN, P_BIN, classes=("a", "b", "c"))


def _assert_svgs(paths: list[Path], names: list[str]) -> list[ElementTree.Element]:
    """Each file is an SVG document of its own: parsed, titled, with something drawn."""
    assert [p.name for p in paths] == names
    roots = []
    for path in paths:
        root = ElementTree.fromstring(path.read_text(encoding="utf-8"))
        assert root.tag == f"{SVG}svg" and root.get("viewBox")
        assert (root.findtext(f"{SVG}title") or "").strip()
        roots.append(root)
    return roots


def test_classification_plots(tmp_path: Path) -> None:
    importance = {f"f{i}": float(i) for i in range(30)}
    paths = write_plots(
        tmp_path / "plots",
        task="classification",
        y_true=Y_BIN,
        prediction=P_BIN,
        importance=importance,
        classes=("No", "Yes"),
    )
    roc, _, confusion, bars = _assert_svgs(
        paths, ["roc.svg", "pr.svg", "confusion.svg", "importance.svg"]
    )
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(p.name for p in paths)
    metrics = evaluate("classification", Y_BIN, P_BIN, classes=("No", "Yes"))
    assert f"AUC {metrics['roc_auc']:.3f}" in ElementTree.tostring(roc, encoding="unicode")
    cells = [int(t.text or "") for t in confusion.iter(f"{SVG}text") if (t.text or "").isdigit()]
    assert cells == [count for row in metrics["confusion_matrix"] for count in row]
    # the top 20 of 30 scores, the largest first, as shares of the total
    shown = [t.text for t in bars.iter(f"{SVG}title")][1:]
    assert len(shown) == 20 and shown[0] == f"f29: {29 / sum(range(30)) * 100:.1f}%"


def test_multiclass_plots(tmp_path: Path) -> None:
    paths = write_plots(
        tmp_path, task="classification", y_true=Y_MULTI, prediction=P_MULTI, importance={}
    )
    _assert_svgs(paths, ["roc.svg", "pr.svg", "confusion.svg", "importance.svg"])


def test_regression_plots(tmp_path: Path) -> None:
    paths = write_plots(
        tmp_path, task="regression", y_true=Y_REG, prediction=P_REG, importance={"x": 1.0}
    )
    _assert_svgs(paths, ["residuals.svg", "importance.svg"])
