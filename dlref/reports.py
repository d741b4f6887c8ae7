"""Baselines, metric tables and plots (PNG in the run and images in TensorBoard)."""

import math
from pathlib import Path

import numpy as np

from dlref import io

# Table columns, in this order: the network, then its baselines (forecasts have three; transfer
# learning compares with the same network trained from scratch, a GAN with real images).
PREDICTORS = ("model", "trivial", "persistence", "seasonal_naive", "classical", "scratch", "real",
              "random", "solved")


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
    widths = [max(12, len(c) + 2) for c in columns]
    first = max([12, *(len(name) + 1 for name in metrics)])  # char_error_rate is 15 letters.
    lines = [f"{'metric':<{first}}"
             + "".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True))]
    for name, row in metrics.items():
        lines.append(f"{name:<{first}}" + "".join(f"{_fmt(row.get(c)):>{w}}"
                                                  for c, w in zip(columns, widths, strict=True)))
    return "\n".join(lines)


def _fmt(value):
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.4f}"


# --- Plots -----------------------------------------------------------------------------------

# Above this many test rows a scatter plot is a solid blob (54,000 diamonds gave one): hexagons
# coloured by count show where the points are.
HEXBIN_ABOVE = 2000
CLASSICAL = "HistGradientBoosting"


def _figure(width=5.0, height=4.0, columns=1):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot.subplots(1, columns, figsize=(width, height), dpi=100)


def learning_curves(history, monitor, loss_label="loss", kept_epoch=None, kept_why=None):
    """Loss, the monitored metric and accuracy per epoch, train and validation.

    Args:
        history: history.csv's rows ("epoch" 0-based).
        monitor: the metric that picks the checkpoint, e.g. "val_roc_auc".
        loss_label: the loss axis' name with its unit, e.g. "MAE (price)".
        kept_epoch: the 1-based epoch the saved model comes from, marked on every panel.
        kept_why: why that epoch, for the marker's label (default: best by the monitor).
    """
    from matplotlib.ticker import MaxNLocator

    names = _curve_names(history, monitor)
    # At least 6 inches: the shared legend below is one row of three entries.
    figure, axes = _figure(max(6.0, 5.0 * len(names)), 4.4, columns=len(names))
    epochs = [row["epoch"] + 1 for row in history]
    for axis, name in zip(np.atleast_1d(axes), names, strict=True):
        # Fixed colours: validation stays orange on a panel that has no train curve.
        # A monitor measured outside training and validation (a GAN's quality of its samples)
        # is labelled by its own name.
        own = name == monitor and not monitor.startswith("val_")
        for key, label, color in ((name, name if own else "train", "C2" if own else "C0"),
                                  (f"val_{name}", "validation", "C1")):
            values = [row.get(key, math.nan) for row in history]
            if not all(isinstance(v, float) and math.isnan(v) for v in values):
                axis.plot(epochs, values, marker=".", label=label, color=color)
        if kept_epoch is not None:
            axis.axvline(kept_epoch, color="gray", linestyle=":",
                         label=f"kept: epoch {kept_epoch} ({kept_why or 'best ' + monitor})")
        for epoch, stage in _stage_starts(history):
            axis.axvline(epoch - 0.5, color="C2", linestyle="--", alpha=0.6,
                         label=f"stage {int(stage)} starts")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))  # No epoch 1.5.
        axis.set(xlabel="epoch", ylabel=loss_label if name.endswith("loss") else name, title=name)
    _shared_legend(figure)
    return figure


def _stage_starts(history):
    """[(1-based epoch, stage)] where a staged run's history.csv changes stage."""
    starts, previous = [], None
    for row in history:
        stage = row.get("stage")
        if previous is not None and stage != previous:
            starts.append((row["epoch"] + 1, stage))
        previous = stage
    return starts


def _shared_legend(figure):
    """One legend below the panels: inside them it covered curves wherever it went."""
    entries = {}
    for axis in figure.axes:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    figure.legend(entries.values(), entries.keys(), loc="lower center", ncol=max(1, len(entries)),
                  frameon=False)
    figure.tight_layout(rect=(0, 0.07, 1, 1))


def _curve_names(history, monitor):
    """The loss (or a GAN's two, d_loss and g_loss), the monitored metric when it is another
    one, and accuracy when logged."""
    keys = {key for row in history for key in row}
    losses = [] if {"loss", "val_loss"} & keys else sorted(
        key for key in keys if key.endswith("_loss") and not key.startswith("val_"))
    names = (losses or ["loss"]) + [monitor.removeprefix("val_")]
    if "accuracy" in keys or "val_accuracy" in keys:
        names.append("accuracy")
    return list(dict.fromkeys(names))  # Drops the repeats, keeps the order.


def _short(value):
    """A figure for a title: 3 significant digits, whole numbers from 100 on (no 1.23e+03)."""
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def predicted_vs_actual(y_true, predictions, target, classical=None):
    """Predictions against the truth with the identity line and the test MAE in the title.

    Args:
        classical: the classical baseline's predictions; only its MAE is shown, in the title.
    """
    y_true, predictions = np.asarray(y_true, float), np.asarray(predictions, float).reshape(-1)
    figure, axis = _figure(5.5, 5.0)
    if len(y_true) > HEXBIN_ABOVE:
        cells = axis.hexbin(y_true, predictions, gridsize=60, mincnt=1, bins="log", cmap="viridis")
        figure.colorbar(cells, ax=axis, fraction=0.046, label="rows (log scale)")
    else:
        axis.scatter(y_true, predictions, s=12, alpha=0.6, label="test rows")
    low = float(min(y_true.min(), predictions.min()))
    high = float(max(y_true.max(), predictions.max()))
    axis.plot([low, high], [low, high], color="gray", linestyle="--", label="perfect")
    margin = 0.03 * (high - low) or 1.0  # Keeps the extreme points whole.
    low, high = low - margin, high + margin
    title = f"Test MAE {_short(np.mean(np.abs(predictions - y_true)))}"
    if classical is not None:
        mae = np.mean(np.abs(np.asarray(classical, float).reshape(-1) - y_true))
        title += f" ({CLASSICAL} {_short(mae)})"
    axis.set(xlabel=f"actual {target}", ylabel=f"predicted {target}", title=title,
             xlim=(low, high), ylim=(low, high), aspect="equal")
    axis.legend(loc="upper left")
    figure.tight_layout()
    return figure


def roc_curve(y_true, scores, positive_class, classical=None, classical_name=CLASSICAL):
    """The model's ROC curve, the classical baseline's (given its scores) and chance."""
    from sklearn import metrics

    from dlref.metrics import roc_auc

    figure, axis = _figure()
    curves = {"model": scores, **({classical_name: classical} if classical is not None else {})}
    # The baseline dashed over a wider model line: where the curves coincide both still show.
    for (name, values), style in zip(curves.items(), ("-", "--"), strict=False):
        false_positive, true_positive, _ = metrics.roc_curve(y_true, values)
        axis.plot(false_positive, true_positive, linestyle=style, linewidth=3.5 - len(style),
                  label=f"{name} (AUC {roc_auc(y_true, values):.3f})")
    axis.plot([0, 1], [0, 1], color="gray", linestyle=":", label="chance (AUC 0.5)")
    axis.set(xlabel="false positive rate", ylabel="true positive rate",
             title=f"ROC curve (test set), positive class: {positive_class}")
    axis.legend(loc="lower right")
    figure.tight_layout()
    return figure


def confusion_matrix(y_true, predicted, classes, title="Confusion matrix (test set)"):
    from sklearn import metrics

    matrix = metrics.confusion_matrix(y_true, predicted, labels=list(range(len(classes))))
    size = max(4.0, 0.5 * len(classes) + 2)
    figure, axis = _figure(size, size)
    image = axis.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axis, fraction=0.046)
    ticks = range(len(classes))
    axis.set(xticks=ticks, yticks=ticks, xticklabels=classes, yticklabels=classes,
             xlabel="predicted", ylabel="actual", title=title)
    if max(len(str(name)) for name in classes) * len(classes) > 8 * size:
        # About 8 characters fit in an inch of axis: longer names side by side would overlap.
        axis.tick_params(axis="x", labelrotation=45)
        for label in axis.get_xticklabels():
            label.set_horizontalalignment("right")
    if len(classes) <= 20:
        for (row, column), count in np.ndenumerate(matrix):
            color = "white" if count > matrix.max() / 2 else "black"
            axis.text(column, row, str(count), ha="center", va="center", color=color,
                      fontsize=11 if len(classes) <= 5 else 8)
    figure.tight_layout()
    return figure


def image_grid(images, titles=None, title=None, columns=8, colors=None):
    """A grid of images (uint8 or floats in [0, 1]; grayscale or RGB), each with an optional
    small title (its label) in an optional colour (red for a mistake).

    Args:
        images: array (count, height, width, channels).
        titles: one line per image, or None.
        colors: one matplotlib colour per title, or None (black).
    """
    images = np.asarray(images)
    count = len(images)
    columns = max(1, min(columns, count))
    rows = max(1, math.ceil(count / columns))
    cell = 1.3 if titles is not None else 1.0
    figure, axes = _figure(columns * 1.0 + 0.2, rows * cell + (0.4 if title else 0.1), columns)
    figure.clf()
    for index in range(rows * columns):
        axis = figure.add_subplot(rows, columns, index + 1)
        axis.axis("off")
        if index >= count:
            continue
        image = images[index]
        gray = image.shape[-1] == 1
        shown = image[..., 0] if gray else image
        scale = {"vmin": 0, "vmax": 255 if image.dtype == np.uint8 else 1}
        axis.imshow(shown, cmap="gray" if gray else None, interpolation="nearest", **scale)
        if titles is not None:
            axis.set_title(str(titles[index]), fontsize=7,
                           color=colors[index] if colors is not None else "black")
    if title:
        figure.suptitle(title, fontsize=10)
        # A grid of one or two images is narrower than its title: widen it to the title.
        needed = 0.08 * len(title) + 0.4  # Inches, at 10 points.
        if figure.get_size_inches()[0] < needed:
            figure.set_size_inches(needed, figure.get_size_inches()[1])
    figure.tight_layout()
    return figure


def mosaic(pixels, caption=None, columns=None):
    """A Pillow image of the images side by side (2-pixel gaps), scaled up to at least 56
    pixels a side, with an optional caption above. Pillow in milliseconds, where a matplotlib
    grid of 64 images took 0.9 s: it is drawn every epoch."""
    from PIL import Image, ImageDraw

    count, height, width, channels = pixels.shape
    columns = columns or math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    scale = max(1, math.ceil(56 / max(height, width)))
    top = 14 if caption else 0
    sheet = Image.new("L" if channels == 1 else "RGB", (columns * (width * scale + 2) + 2,
                                                        rows * (height * scale + 2) + 2 + top),
                      255)
    for index, image in enumerate(pixels):
        tile = Image.fromarray(image[..., 0] if channels == 1 else image)
        tile = tile.resize((width * scale, height * scale), Image.Resampling.NEAREST)
        row, column = divmod(index, columns)
        sheet.paste(tile, (2 + column * (width * scale + 2), 2 + top + row * (height * scale + 2)))
    if caption:
        ImageDraw.Draw(sheet).text((4, 1), caption, fill=0)
    return sheet


def save_png(image, path):
    with io.atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG")


def write_gif(frames, path, seconds=0.4):
    """An animated GIF of the PNG `frames`, each shown `seconds`, looping; the last one longer."""
    from PIL import Image

    pictures = [Image.open(frame).convert("RGB") for frame in frames]
    durations = [int(seconds * 1000)] * (len(pictures) - 1) + [2000]
    with io.atomic_path(path, suffix=".gif") as tmp:
        pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:],
                         duration=durations, loop=0)


# Test steps a forecast plot draws: past a few hundred, lines of minute data blur into a band.
FORECAST_STEPS = 300


def forecast(when, actual, forecasts, target, shown=FORECAST_STEPS):
    """The test period: actual values and each predictor's one-step-ahead forecasts; of a long
    period, its last `shown` steps (the title says so; the MAE is over all of it)."""
    figure, axis = _figure(9.0, 4.0)
    actual = np.asarray(actual)
    mae = float(np.mean(np.abs(np.asarray(forecasts["model"]) - actual)))
    period = "test period"
    if len(actual) > shown:
        period = f"last {shown:,} of {len(actual):,} test steps"
        when, actual = when[-shown:], actual[-shown:]
        forecasts = {name: np.asarray(values)[-shown:] for name, values in forecasts.items()}
    axis.plot(when, actual, color="black", linewidth=2, label="actual")
    styles = {"model": dict(linewidth=1.8), "persistence": dict(linestyle=":"),
              "seasonal_naive": dict(linestyle="--"), "classical": dict(linestyle="-.")}
    for name, values in forecasts.items():
        label = "ARIMA" if name == "classical" else name.replace("_", " ")
        axis.plot(when, values, label=label, **styles.get(name, {}))
    axis.set(xlabel="time", ylabel=target,
             title=f"One-step-ahead forecasts, {period} (model MAE {_short(mae)})")
    axis.legend(loc="best", fontsize=8)
    figure.autofmt_xdate()
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


def save_test_scalars(metrics, run_dir, step=0):
    """Test metrics as TensorBoard scalars in logs/test, so the Scalars tab compares runs.

    The model's figure is tag test/NAME, the baselines' test/NAME_trivial and
    test/NAME_classical: one chart per figure, with a point for each run. NaN is left out.
    """
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(Path(run_dir) / "logs" / "test"))
    with writer.as_default():
        for name, row in metrics.items():
            for predictor, value in row.items():
                if not isinstance(value, (int, float)) or math.isnan(value):
                    continue
                suffix = "" if predictor == "model" else f"_{predictor}"
                tf.summary.scalar(f"test/{name}{suffix}", float(value), step=step)
    writer.close()
