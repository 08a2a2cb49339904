"""The baseline of ``bench/train.py``: the same work as ``kubeloop train``, as a plain script.

One process, no kubeloop: read the CSV with pandas, read text columns that are (nearly all)
numbers as numbers, drop id-like text columns, take the 60/20/20 stratified split kubeloop makes
(its row numbers, from ``ROWS.npz``: the same test rows), a scikit-learn ``ColumnTransformer``
(median + standard scaling; most frequent + one-hot), XGBoost with early stopping on the
validation split (kubeloop's parameters) and a logistic regression; the better on validation is
tested. Prints one JSON line: the chosen model and its test ROC AUC.

Usage::

    .venv/bin/python bench/plain_train.py DATA.csv TARGET ROWS.npz

``ROWS.npz`` holds the arrays ``train``, ``validation`` and ``test`` (row numbers of DATA.csv);
``bench/train.py`` writes it with :func:`kubeloop.data.split_rows`.
"""

import json
import sys

import numpy as np
import pandas as pd
import xgboost
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def xgboost_params(y_train: np.ndarray) -> dict:
    """kubeloop's default XGBoost parameters for a binary target (``bench/plain_scale.py`` too)."""
    positives = float((y_train == 1).sum())
    return {
        "objective": "binary:logistic",
        "eval_metric": "auc",
        "tree_method": "hist",
        "max_depth": 5,
        "learning_rate": 0.05,
        "min_child_weight": 10.0,
        "subsample": 0.8,
        "colsample_bytree": 0.8,
        "scale_pos_weight": (len(y_train) - positives) / positives,
        "seed": 0,
    }


def main(path: str, target: str, rows: str) -> None:
    frame = pd.read_csv(path)
    classes = sorted(frame[target].dropna().astype(str).unique())
    y = frame.pop(target).astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy()
    numeric, categorical = [], []
    for name in frame.columns:
        column = frame[name]
        if column.dtype == object:
            parsed = pd.to_numeric(column.str.strip(), errors="coerce")
            if parsed.notna().mean() >= 0.95:
                frame[name] = parsed
            elif column.nunique() == len(column):  # an id
                continue
        (numeric if pd.api.types.is_numeric_dtype(frame[name]) else categorical).append(name)

    with np.load(rows) as parts:
        train, valid, test = parts["train"], parts["validation"], parts["test"]

    prep = ColumnTransformer(
        [
            ("num", Pipeline([("i", SimpleImputer(strategy="median")), ("s", StandardScaler())]),
             numeric),
            ("cat", Pipeline([("i", SimpleImputer(strategy="most_frequent")),
                              ("o", OneHotEncoder(handle_unknown="ignore", sparse_output=False))]),
             categorical),
        ]
    )  # fmt: skip
    x_train = prep.fit_transform(frame.iloc[train])
    x_valid, x_test = prep.transform(frame.iloc[valid]), prep.transform(frame.iloc[test])

    params = xgboost_params(y[train])
    dtrain = xgboost.QuantileDMatrix(x_train, label=y[train])
    dvalid = xgboost.QuantileDMatrix(x_valid, label=y[valid], ref=dtrain)
    booster = xgboost.train(
        params,
        dtrain,
        num_boost_round=2000,
        evals=[(dvalid, "valid")],
        early_stopping_rounds=50,
        verbose_eval=False,
    )
    booster = booster[: booster.best_iteration + 1]
    linear = LogisticRegression(max_iter=2000, random_state=0).fit(x_train, y[train])

    scores = {
        "xgboost": (booster.inplace_predict(x_valid), booster.inplace_predict(x_test)),
        "linear": (linear.predict_proba(x_valid)[:, 1], linear.predict_proba(x_test)[:, 1]),
    }
    chosen = max(scores, key=lambda name: roc_auc_score(y[valid], scores[name][0]))
    auc = float(roc_auc_score(y[test], scores[chosen][1]))
    print(json.dumps({"model": chosen, "test_roc_auc": auc}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
