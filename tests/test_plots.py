"""What the plots draw: panels, axis names, ticks, the kept epoch, curves and counts.

Figures are built straight from small arrays (no training), except the last test, which reads
a trained run's TensorBoard scalars back.
"""

import numpy as np
import pytest

import helpers
from dlref import registry, reports
from dlref.data import Dataset

# Five epochs, so matplotlib's default locator would put ticks at 1.5, 2.5, ...
HISTORY = [{"epoch": e, "loss": 1.0 - 0.1 * e, "val_loss": 1.1 - 0.1 * e + 0.04 * (e == 4),
            "accuracy": 0.5 + 0.1 * e, "val_accuracy": 0.5 + 0.05 * e,
            "val_roc_auc": 0.6 + 0.05 * e - 0.2 * (e > 2)} for e in range(5)]


@pytest.fixture
def close_figures():
    from matplotlib import pyplot

    yield
    pyplot.close("all")


def _kept_lines(axis):
    return [line for line in axis.lines if line.get_label().startswith("kept")]


@pytest.mark.parametrize("monitor, titles", [
    ("val_roc_auc", ["loss", "roc_auc", "accuracy"]),
    ("val_accuracy", ["loss", "accuracy"]),  # The monitored metric is not drawn twice.
    ("val_loss", ["loss", "accuracy"]),
])
def test_learning_curves_panels(monitor, titles, close_figures):
    figure = reports.learning_curves(HISTORY, monitor)
    assert [axis.get_title() for axis in figure.axes] == titles


def test_learning_curves_mark_the_kept_epoch_on_every_panel(close_figures):
    figure = reports.learning_curves(HISTORY, "val_roc_auc", "cross-entropy", kept_epoch=3)
    assert figure.axes[0].get_ylabel() == "cross-entropy"
    for axis in figure.axes:
        (marker,) = _kept_lines(axis)
        assert list(marker.get_xdata()) == [3, 3]
        assert marker.get_label() == "kept: epoch 3 (best val_roc_auc)"
    # One legend for the figure, each entry once, none inside a panel.
    (legend,) = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == [
        "train", "validation", "kept: epoch 3 (best val_roc_auc)"]
    assert all(axis.get_legend() is None for axis in figure.axes)


def test_learning_curves_without_a_kept_epoch_draw_no_marker(close_figures):
    figure = reports.learning_curves(HISTORY, "val_loss")
    assert not any(_kept_lines(axis) for axis in figure.axes)


@pytest.mark.parametrize("epochs", [1, 5, 200])
def test_epoch_ticks_are_whole_numbers(epochs, close_figures):
    history = [{"epoch": e, "loss": 1 / (e + 1), "val_loss": 1 / (e + 1)} for e in range(epochs)]
    figure = reports.learning_curves(history, "val_loss")
    figure.canvas.draw()
    axis = figure.axes[0]
    low, high = axis.get_xlim()
    ticks = [t for t in axis.get_xticks() if low <= t <= high]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    assert all(label.get_text().lstrip("−-").isdigit() for label in axis.get_xticklabels()
               if label.get_text())


@pytest.mark.parametrize("recipe, meta, expected", [
    ("regression", {"target": "y"}, "MAE (y)"),
    ("binary", {"target": "churned"}, "cross-entropy"),
    ("multiclass", {"target": "species"}, "cross-entropy"),
])
def test_loss_axis_names_the_loss_and_its_unit(recipe, meta, expected, close_figures):
    label = registry.load(recipe).loss_label(meta)
    assert label == expected
    assert reports.learning_curves(HISTORY, "val_loss", label).axes[0].get_ylabel() == expected


@pytest.mark.parametrize("rows, drawn", [(reports.HEXBIN_ABOVE, "PathCollection"),
                                         (reports.HEXBIN_ABOVE + 1, "PolyCollection")])
def test_predicted_vs_actual_bins_many_points(rows, drawn, close_figures):
    rng = np.random.default_rng(0)
    y_true = rng.normal(10, 2, size=rows)
    predictions = y_true + rng.normal(0, 0.5, size=rows)
    figure = reports.predicted_vs_actual(y_true, predictions, "price",
                                         classical=y_true + 0.25)
    axis = figure.axes[0]
    assert [type(c).__name__ for c in axis.collections] == [drawn]  # scatter or hexbin
    (identity,) = [line for line in axis.lines if line.get_label() == "perfect"]
    np.testing.assert_allclose(identity.get_xdata(), identity.get_ydata())
    mae = np.mean(np.abs(predictions - y_true))
    assert axis.get_title() == f"Test MAE {mae:.3g} (HistGradientBoosting 0.25)"
    assert axis.get_xlabel() == "actual price"


def test_roc_curve_draws_the_classical_baseline_beside_the_model(close_figures):
    y_true = np.array([0, 0, 1, 1, 0, 1])
    model = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9])  # One pair out of order: AUC 8/9.
    classical = np.array([0.1, 0.2, 0.8, 0.9, 0.3, 0.7])  # Perfect ranking: AUC 1.
    figure = reports.roc_curve(y_true, model, "yes", classical=classical)
    labels = [line.get_label() for line in figure.axes[0].lines]
    assert labels == ["model (AUC 0.889)", "HistGradientBoosting (AUC 1.000)",
                      "chance (AUC 0.5)"]
    assert len(reports.roc_curve(y_true, model, "yes").axes[0].lines) == 2


class _FixedModel:
    """Stands in for a keras.Model: predict returns the given outputs."""

    def __init__(self, outputs):
        self.outputs = np.asarray(outputs, dtype="float32")

    def predict(self, x, verbose=0):
        return self.outputs


def _counts(axis):
    """The numbers written in a confusion matrix's cells, row by row."""
    return [int(text.get_text()) for text in axis.texts]


def test_binary_confusion_matrix_counts_at_the_chosen_threshold(close_figures):
    y = np.array([0, 0, 0, 1, 1, 1], dtype="float32")
    probability = np.array([0.2, 0.6, 0.75, 0.65, 0.8, 0.9])
    meta = {"classes": ["no", "yes"], "positive_class": "yes", "threshold": 0.7}
    data = Dataset(train=(y[:, None], y), val=(y[:, None], y), test=(y[:, None], y), meta=meta)
    figures = registry.load("binary").plots(_FixedModel(probability[:, None]), data,
                                            classical=probability)
    axis = figures["confusion_matrix"].axes[0]
    # At 0.7: 0.75 is a false positive and 0.65 a false negative (at 0.5 it would be 2 and 0).
    assert _counts(axis) == [2, 1, 1, 2]
    assert "threshold 0.7000" in axis.get_title()
    assert len(figures["roc_curve"].axes[0].lines) == 3


def test_ten_class_confusion_matrix_keeps_every_count_and_label(close_figures):
    classes = [f"class_{i}" for i in range(10)]
    y_true = np.repeat(np.arange(10), 3)
    predicted = np.where(np.arange(30) % 7 == 0, (y_true + 1) % 10, y_true)
    figure = reports.confusion_matrix(y_true, predicted, classes)
    axis = figure.axes[0]
    assert len(axis.texts) == 100 and sum(_counts(axis)) == 30
    assert [label.get_text() for label in axis.get_xticklabels()] == classes
    # Long names are turned so they do not run into each other.
    assert all(label.get_rotation() == 45 for label in axis.get_xticklabels())


def test_a_trained_run_writes_its_test_metrics_as_scalars(trained):
    run = trained["binary"]["run"]
    metrics = helpers.read_json(run / "metrics.json")["metrics"]
    scalars = helpers.scalar_events(run / "logs" / "test")
    kept_step = helpers.read_json(run / "run.json")["best"]["epoch"] - 1
    for suffix, predictor in (("", "model"), ("_trivial", "trivial"),
                              ("_classical", "classical")):
        (step, value), = scalars[f"test/roc_auc{suffix}"]
        assert step == kept_step
        assert value == pytest.approx(metrics["roc_auc"][predictor], rel=1e-6)
