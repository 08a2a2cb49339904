"""The baseline of ``bench/scale.py``: XGBoost on a big table as a plain one-process script.

No kubeloop: pandas ``read_csv``, text columns that are (nearly all) numbers read as numbers, an
id column (a different value in every row) dropped, every other text column a pandas
categorical, XGBoost's ``QuantileDMatrix`` with native categorical support, kubeloop's split
(its row numbers, from ``ROWS.npz``: the same test rows), kubeloop's default XGBoost parameters
(``kubeloop.training.xgboost_params``: depth 5, learning rate 0.05, ...) and early stopping (50
rounds without a better validation ROC AUC, at most 2,000 rounds). Prints one JSON line: the test
ROC AUC and the rounds.

Usage::

    .venv/bin/python bench/plain_scale.py DATA.csv TARGET ROWS.npz
"""

import json
import sys

import numpy as np
import pandas as pd
import xgboost
from sklearn.metrics import roc_auc_score

from plain_train import xgboost_params  # the same parameters as bench/train.py's baseline


def main(path: str, target: str, rows: str) -> None:
    frame = pd.read_csv(path)
    classes = sorted(frame[target].dropna().astype(str).unique())
    y = frame.pop(target).astype(str).map({c: i for i, c in enumerate(classes)}).to_numpy()
    for name in list(frame.columns):
        column = frame[name]
        if column.dtype != object:
            continue
        parsed = pd.to_numeric(column.str.strip(), errors="coerce")
        if parsed.notna().mean() >= 0.95:
            frame[name] = parsed
        elif column.nunique() == len(column):  # an id
            frame.pop(name)
        else:
            frame[name] = column.astype("category")

    with np.load(rows) as parts:
        train, valid, test = parts["train"], parts["validation"], parts["test"]
    params = xgboost_params(y[train])
    dtrain = xgboost.QuantileDMatrix(frame.iloc[train], label=y[train], enable_categorical=True)
    dvalid = xgboost.QuantileDMatrix(
        frame.iloc[valid], label=y[valid], ref=dtrain, enable_categorical=True
    )
    booster = xgboost.train(
        params,
        dtrain,
        num_boost_round=2000,
        evals=[(dvalid, "valid")],
        early_stopping_rounds=50,
        verbose_eval=False,
    )
    booster = booster[: booster.best_iteration + 1]
    auc = float(roc_auc_score(y[test], booster.inplace_predict(frame.iloc[test])))
    print(json.dumps({"test_roc_auc": auc, "rounds": booster.num_boosted_rounds()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
