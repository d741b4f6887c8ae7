"""Baselines, metric tables and plots (PNG in the run and images in TensorBoard)."""

import math
from pathlib import Path

import numpy as np

from dlref import io

PREDICTORS = ("model", "trivial", "classical")


# --- Classical baseline ----------------------------------------------------------------------


def classical_outputs(data, seed):
    """HistGradientBoosting fitted on the same training split, outputs shaped like the model's."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    (x_train, y_train), (x_test, _) = data.train, data.test
    if data.meta["task"] == "regression":
        model = HistGradientBoostingRegressor(random_state=seed).fit(x_train, y_train)
        return model.predict(x_test)
    model = HistGradientBoostingClassifier(random_state=seed).fit(x_train, y_train.astype(int))
    probabilities = np.zeros((len(x_test), len(data.meta["classes"])))
    probabilities[:, model.classes_] = model.predict_proba(x_test)
    return probabilities[:, 1] if data.meta["task"] == "binary" else probabilities


# --- Tables ----------------------------------------------------------------------------------


def metrics_table(metrics):
    """A short text table: metric | model | trivial | classical."""
    columns = [p for p in PREDICTORS if any(p in row for row in metrics.values())]
    lines = [f"{'metric':<12}" + "".join(f"{c:>12}" for c in columns)]
    for name, row in metrics.items():
        lines.append(f"{name:<12}" + "".join(f"{_fmt(row.get(c)):>12}" for c in columns))
    return "\n".join(lines)


def _fmt(value):
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.4f}"


# --- Plots -----------------------------------------------------------------------------------


def _figure(width=5.0, height=4.0, columns=1):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot.subplots(1, columns, figsize=(width, height), dpi=100)


def learning_curves(history, monitor):
    """Loss (and the monitored metric, when it is another one) per epoch, train and validation."""
    names = ["loss"] + ([monitor.removeprefix("val_")] if monitor != "val_loss" else [])
    figure, axes = _figure(5.0 * len(names), 4.0, columns=len(names))
    axes = np.atleast_1d(axes)
    epochs = [row["epoch"] + 1 for row in history]
    for axis, name in zip(axes, names, strict=True):
        for key, label in ((name, "train"), (f"val_{name}", "validation")):
            values = [row.get(key, math.nan) for row in history]
            if not all(isinstance(v, float) and math.isnan(v) for v in values):
                axis.plot(epochs, values, marker=".", label=label)
        axis.set(xlabel="epoch", ylabel=name, title=name)
        axis.legend()
    figure.tight_layout()
    return figure


def predicted_vs_actual(y_true, predictions, target):
    figure, axis = _figure()
    axis.scatter(y_true, predictions, s=12, alpha=0.7)
    low, high = float(min(np.min(y_true), np.min(predictions))), float(
        max(np.max(y_true), np.max(predictions)))
    axis.plot([low, high], [low, high], color="gray", linestyle="--", label="perfect")
    axis.set(xlabel=f"actual {target}", ylabel=f"predicted {target}", title="Test set")
    axis.legend()
    figure.tight_layout()
    return figure


def roc_curve(y_true, scores, positive_class):
    from sklearn import metrics

    from dlref.callbacks import roc_auc

    figure, axis = _figure()
    false_positive, true_positive, _ = metrics.roc_curve(y_true, scores)
    axis.plot(false_positive, true_positive, label=f"model (AUC {roc_auc(y_true, scores):.3f})")
    axis.plot([0, 1], [0, 1], color="gray", linestyle="--", label="chance (AUC 0.5)")
    axis.set(xlabel="false positive rate", ylabel="true positive rate",
             title=f"ROC curve, positive class: {positive_class}")
    axis.legend(loc="lower right")
    figure.tight_layout()
    return figure


def confusion_matrix(y_true, predicted, classes):
    from sklearn import metrics

    matrix = metrics.confusion_matrix(y_true, predicted, labels=list(range(len(classes))))
    size = max(4.0, 0.5 * len(classes) + 2)
    figure, axis = _figure(size, size)
    image = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axis, fraction=0.046)
    ticks = range(len(classes))
    axis.set(xticks=ticks, yticks=ticks, xticklabels=classes, yticklabels=classes,
             xlabel="predicted", ylabel="actual", title="Confusion matrix (test set)")
    if len(classes) <= 20:
        for (row, column), count in np.ndenumerate(matrix):
            color = "white" if count > matrix.max() / 2 else "black"
            axis.text(column, row, str(count), ha="center", va="center", color=color, fontsize=8)
    figure.tight_layout()
    return figure


def save_figures(figures, run_dir, texts=None, step=0):
    """Writes each figure to plots/NAME.png and, with `texts`, into TensorBoard's logs/plots."""
    import tensorflow as tf
    from matplotlib import pyplot

    run_dir = Path(run_dir)
    writer = tf.summary.create_file_writer(str(run_dir / "logs" / "plots"))
    with writer.as_default():
        for name, figure in figures.items():
            with io.atomic_path(run_dir / "plots" / f"{name}.png", suffix=".png") as tmp:
                figure.savefig(tmp, format="png")
            png = (run_dir / "plots" / f"{name}.png").read_bytes()
            tf.summary.image(name, tf.expand_dims(tf.io.decode_png(png, channels=4), 0), step=step)
            pyplot.close(figure)
        for name, text in (texts or {}).items():
            # Four leading spaces: TensorBoard renders text as Markdown, this keeps columns.
            tf.summary.text(name, "\n".join("    " + line for line in text.splitlines()), step=step)
    writer.close()
