"""Shared test helpers: tiny CSV writers, the in-process CLI, and checks on user errors.

Imported by the test modules as `helpers` (pytest puts tests/ on sys.path). The data are small
(40-60 rows) and seeded, so a one-epoch run on them takes a couple of seconds.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

# The plot each tabular recipe draws besides the learning curves (DESIGN.md section 4).
RECIPE_PLOTS = {
    "regression": "predicted_vs_actual",
    "binary": "roc_curve",
    "multiclass": "confusion_matrix",
    "timeseries": "forecast",
    "text": "roc_curve",
    "gan": "samples",
    "cnn": "misclassified",
    "transfer": "misclassified",
}


# --- Tiny data -------------------------------------------------------------------------------


def write_csv(path, header, rows, delimiter=","):
    """Writes rows under a header; returns the path."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def regression_rows(rows=48, seed=0, categorical=False, noise=0.1, signal=1.0):
    """Features x1..x3 (+ a 'color' category) and a continuous target 'y'.

    signal=0 makes 'y' pure noise: a network can only overfit it, so its validation loss is
    best in the first epochs and worse after.
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3)).round(4)
    colors = np.array(["red", "green", "blue"])[np.arange(rows) % 3]
    y = signal * (3 * x[:, 0] - 2 * x[:, 1] + 0.5 * x[:, 2]) + rng.normal(scale=noise, size=rows)
    if categorical:
        y = y + np.where(colors == "red", 2.0, 0.0)
    header = ["x1", "x2", "x3"] + (["color"] if categorical else []) + ["y"]
    table = []
    for i in range(rows):
        row = [float(v) for v in x[i]] + ([str(colors[i])] if categorical else [])
        table.append(row + [round(float(y[i]), 4)])
    return header, table


def binary_rows(rows=48, seed=0, categorical=False, labels=("no", "yes")):
    """Features x1..x3 (+ a 'plan' category) and a two-valued target 'churned' (half each)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3)).round(4)
    positive = np.arange(rows) % 2 == 1
    x[positive, 0] += 1.5  # Learnable, so ROC-AUC is above chance after an epoch or two.
    plans = np.array(["basic", "pro"])[np.arange(rows) % 4 // 2]
    header = ["x1", "x2", "x3"] + (["plan"] if categorical else []) + ["churned"]
    table = []
    for i in range(rows):
        row = [float(v) for v in x[i]] + ([str(plans[i])] if categorical else [])
        table.append(row + [labels[int(positive[i])]])
    return header, table


def multiclass_rows(rows=60, seed=0, classes=("setosa", "versicolor", "virginica")):
    """Features x1..x4 and a three-valued string target 'species' (balanced)."""
    rng = np.random.default_rng(seed)
    label = np.arange(rows) % len(classes)
    x = rng.normal(size=(rows, 4))
    x[:, 0] += 2.0 * label
    x[:, 1] -= 1.5 * label
    x = x.round(4)
    header = ["x1", "x2", "x3", "x4", "species"]
    return header, [[float(v) for v in x[i]] + [classes[label[i]]] for i in range(rows)]


def regression_csv(path, delimiter=",", **kwargs):
    return write_csv(path, *regression_rows(**kwargs), delimiter=delimiter)


def binary_csv(path, delimiter=",", **kwargs):
    return write_csv(path, *binary_rows(**kwargs), delimiter=delimiter)


def multiclass_csv(path, delimiter=",", **kwargs):
    return write_csv(path, *multiclass_rows(**kwargs), delimiter=delimiter)


def reviews_csv(path, rows=60, seed=0):
    """Short reviews (filler words with three positive or negative ones) in 'review', their
    'sentiment' (positive / negative, half each): the text recipe learns it in an epoch or two."""
    rng = np.random.default_rng(seed)
    words = {"positive": ["wonderful", "moving", "brilliant", "funny", "superb", "charming"],
             "negative": ["boring", "dull", "awful", "clumsy", "tedious", "bland"]}
    filler = ["the", "film", "plot", "actors", "was", "story", "and", "a", "scene"]
    table = []
    for i in range(rows):
        label = ("positive", "negative")[i % 2]
        chosen = list(rng.choice(filler, 8)) + list(rng.choice(words[label], 3))
        rng.shuffle(chosen)
        table.append([" ".join(chosen).capitalize() + ".", label])
    return write_csv(path, ["review", "sentiment"], table)


# Each recipe's tiny data from a table: (writer, target column).
TINY_DATA = {
    "regression": (regression_csv, "y"),
    "binary": (binary_csv, "churned"),
    "multiclass": (multiclass_csv, "species"),
    "text": (reviews_csv, "sentiment"),
}

# Settings that make one epoch on a large built-in dataset quick (25,000 IMDB reviews, 5,000
# digits): smaller networks, and less of the work a recipe does around its epochs. Text trains
# on 11 % of its reviews and is tested on 4 %: its TF-IDF baseline took 20 s on the default
# 70 % and 15 %.
QUICK = {"text": ["--set", "sequence_length=16", "--set", "filters=16",
                  "--set", "val_fraction=0.85", "--set", "test_fraction=0.04"],
         "cnn": ["--set", "filters=[8,8]", "--set", "dense_units=[32,16]"],
         "transfer": ["--set", "pretrain_epochs=1", "--set", "per_class=5",
                      "--set", "dense_units=16", "--set", "scratch_baseline=false"],
         "gan": ["--set", "generator_filters=16", "--set", "discriminator_filters=8",
                 "--set", "judge_epochs=1", "--set", "quality_samples=100"]}


# --- CLI -------------------------------------------------------------------------------------


def invoke(*args):
    """Runs `dlref ARGS` in-process and returns typer's Result (stdout and stderr mixed)."""
    from typer.testing import CliRunner

    from dlref.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def assert_ok(result):
    assert result.exit_code == 0, f"exit {result.exit_code}:\n{result.output}\n{result.exception!r}"


def assert_user_error(result, *words):
    """Exit code 2, a message holding every word, no traceback, and a clean SystemExit."""
    output = result.output
    assert result.exit_code == 2, f"exit {result.exit_code}:\n{output}\n{result.exception!r}"
    assert "Traceback" not in output, output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    for word in words:
        assert word in output, f"{word!r} not in:\n{output}"


def run_folders(root, recipe="*"):
    """Every run folder under a runs root (runs/<recipe>/<run>/)."""
    root = Path(root)
    return sorted(p for p in root.glob(f"{recipe}/*") if p.is_dir()) if root.is_dir() else []


def only_run(root, recipe="*"):
    folders = run_folders(root, recipe)
    assert len(folders) == 1, folders
    return folders[0]


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def history_epochs(run_dir):
    with open(Path(run_dir) / "history.csv", newline="", encoding="utf-8") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def scalar_events(folder):
    """{tag: [(step, value)]} of the scalar summaries in a TensorBoard log folder."""
    import tensorflow as tf

    found = {}
    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name != "scalars":
                    continue  # The model graph's config, histograms, images.
                number = float(tf.make_ndarray(value.tensor))
                found.setdefault(value.tag, []).append((event.step, number))
    return found


def python(code_or_args, env=None, timeout=120, cwd=None):
    """Runs the venv's Python in a subprocess; returns CompletedProcess with text output."""
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else list(code_or_args)
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd or REPO)
