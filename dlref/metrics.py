"""Metrics that several modules share (callbacks, reports, recipes), in one place below them.

Plain NumPy and scikit-learn: importing this module loads no TensorFlow.
"""

import math

import numpy as np


def roc_auc(y_true, scores):
    """sklearn's ROC-AUC; one-vs-rest macro over the classes present for multiclass scores."""
    from sklearn.metrics import roc_auc_score

    y_true = np.asarray(y_true).astype(int).ravel()
    scores = np.asarray(scores)
    if scores.ndim == 1 or scores.shape[1] == 1:
        scores = scores.reshape(-1)
        return float(roc_auc_score(y_true, scores)) if len(set(y_true)) == 2 else math.nan
    per_class = [
        roc_auc_score(y_true == k, scores[:, k])
        for k in range(scores.shape[1])
        if 0 < np.sum(y_true == k) < len(y_true)
    ]
    return float(np.mean(per_class)) if per_class else math.nan


def forecast_errors(actual, predicted):
    """RMSE, MAE and MAPE (in %, over the non-zero actual values) of point forecasts."""
    errors = np.asarray(predicted) - actual
    nonzero = actual != 0
    return {
        "rmse": float(np.sqrt(np.mean(errors ** 2))),
        "mae": float(np.mean(np.abs(errors))),
        "mape": float(np.mean(np.abs(errors[nonzero] / actual[nonzero])) * 100)
        if nonzero.any() else float("nan"),
    }
