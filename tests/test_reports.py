"""Reports: metric tables, learning curves, the classical baseline, figures and test scalars
into TensorBoard."""

import math

import numpy as np
import pytest

from dlref import reports
from dlref.data import Dataset

HISTORY = [
    {"epoch": 0, "loss": 0.9, "val_loss": 1.0, "val_roc_auc": 0.6},
    {"epoch": 1, "loss": 0.7, "val_loss": 0.8, "val_roc_auc": 0.7},
]


def test_metrics_table_lines_up_predictors():
    table = reports.metrics_table({"mae": {"model": 0.5, "trivial": 1.0},
                                   "r2": {"model": math.nan, "trivial": 0.0, "classical": 0.25}})
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "model", "trivial", "classical"]
    assert lines[1].split() == ["mae", "0.5000", "1.0000", "-"]
    assert lines[2].split() == ["r2", "nan", "0.0000", "0.2500"]


@pytest.mark.parametrize("monitor, titles", [("val_loss", ["loss"]),
                                             ("val_roc_auc", ["loss", "roc_auc"])])
def test_learning_curves_draw_loss_and_the_monitored_metric(monitor, titles):
    from matplotlib import pyplot

    figure = reports.learning_curves(HISTORY, monitor)
    try:
        assert [axis.get_title() for axis in figure.axes] == titles
        loss_lines = {line.get_label(): list(line.get_ydata()) for line in figure.axes[0].lines}
        assert loss_lines == {"train": [0.9, 0.7], "validation": [1.0, 0.8]}
        if monitor == "val_roc_auc":
            assert [line.get_label() for line in figure.axes[1].lines] == ["validation"]
    finally:
        pyplot.close(figure)


def _dataset(task, classes=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype("float32")
    if task == "regression":
        y = x[:, 0] * 2
    else:
        y = (np.arange(60) % len(classes)).astype("int32")
        x[:, 0] += y
    meta = {"task": task, **({"classes": classes} if classes else {})}
    return Dataset(train=(x[:40], y[:40]), val=(x[40:50], y[40:50]), test=(x[50:], y[50:]),
                   meta=meta)


@pytest.mark.parametrize("task, classes, shape", [
    ("regression", None, (10,)),
    ("binary", ["no", "yes"], (10,)),
    ("multiclass", ["a", "b", "c"], (10, 3)),
])
def test_classical_outputs_are_shaped_like_the_models(task, classes, shape):
    outputs = reports.classical_outputs(_dataset(task, classes), seed=0)
    assert np.shape(outputs) == shape
    if task == "multiclass":
        np.testing.assert_allclose(outputs.sum(axis=1), 1.0)
    if task == "binary":
        assert ((0 <= outputs) & (outputs <= 1)).all()


def test_save_figures_writes_png_and_tensorboard_images(tmp_path):
    import tensorflow as tf

    figures = {"learning_curves": reports.learning_curves(HISTORY, "val_loss"),
               "confusion_matrix": reports.confusion_matrix([0, 1, 1], [0, 1, 0], ["a", "b"])}
    reports.save_figures(figures, tmp_path)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "confusion_matrix.png", "learning_curves.png"]
    tags = set()
    for path in (tmp_path / "logs" / "plots").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            tags.update(value.tag for value in event.summary.value)
    assert {"learning_curves", "confusion_matrix"} <= tags


def test_save_test_scalars_writes_each_predictor_and_skips_nan(tmp_path):
    import helpers

    metrics = {"mae": {"model": 0.5, "trivial": 1.25, "classical": 0.75},
               "r2": {"model": math.nan, "trivial": 0.0}}
    reports.save_test_scalars(metrics, tmp_path, step=3)
    scalars = helpers.scalar_events(tmp_path / "logs" / "test")
    assert scalars == {"test/mae": [(3, 0.5)], "test/mae_trivial": [(3, 1.25)],
                       "test/mae_classical": [(3, 0.75)], "test/r2_trivial": [(3, 0.0)]}
