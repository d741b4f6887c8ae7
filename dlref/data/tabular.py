"""Tabular data: CSV reading, validation, target encoding, the train-only scaler, one-hot columns.

Everything fitted here (feature means and deviations, category lists, class labels, the
trivial baselines' statistics) is fitted on the training split only and kept as plain JSON
in `meta`, so `dlref predict` applies exactly what the model was trained with.
"""

import csv
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from dlref.data import Dataset, builtin
from dlref.errors import DlrefError, close_match

MAX_CATEGORIES = 50  # More distinct strings than this is free text or an ID, not a category.
POSITIVE_WORDS = {"1", "true", "yes", "y", "positive", "pos"}


# --- Reading ---------------------------------------------------------------------------------


def read_csv(path):
    """Reads a CSV with a header row; the delimiter (, ; tab |) is sniffed from the first lines."""
    path = Path(path)
    if not path.is_file():
        raise DlrefError(f"Data file not found: {path}")
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        sample = handle.read(65536)
    if not sample.strip():
        raise DlrefError(f"{path} is empty: expected a header row and data rows.")
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = ","
    try:
        frame = pd.read_csv(path, sep=delimiter)
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DlrefError(f"Could not parse {path} as CSV: {error}") from None
    if all(_is_number(name) for name in frame.columns):
        raise DlrefError(
            f"{path}: the first row looks like data ({', '.join(map(str, frame.columns[:4]))}...). "
            "dlref needs a header row with column names."
        )
    if frame.empty:
        raise DlrefError(f"{path} has a header but no data rows.")
    return frame


def _is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def _rows(mask):
    rows = np.flatnonzero(np.asarray(mask))
    shown = ", ".join(str(r + 2) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
    return f"{len(rows)} rows (file lines {shown})"


# --- Target ----------------------------------------------------------------------------------


def check_target(frame, target, where):
    if target is None:
        raise DlrefError(f"--target is required with --data: the column to predict in {where}.")
    if target not in frame.columns:
        raise DlrefError(
            f"No target column {target!r} in {where}.{close_match(target, frame.columns)} "
            f"Columns: {', '.join(map(str, frame.columns))}."
        )
    _check_finite(frame[[target]], "target")


def encode_target(series, task, positive_class=None):
    """Returns (y, meta) where meta holds the class names or nothing for regression."""
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            raise DlrefError(
                f"Target {series.name!r} is not numeric (values like {series.iloc[0]!r}): "
                "regression needs numbers. For class labels use `dlref train binary` or "
                "`dlref train multiclass`."
            )
        return series.to_numpy(dtype="float32"), {}
    _check_class_labels(series, task)
    labels = series.astype(str).to_numpy()
    classes = [str(v) for v in sorted(series.unique(), key=_sort_key)]
    if task == "binary":
        return _encode_binary(labels, classes, series.name, positive_class)
    if len(classes) < 2:
        raise DlrefError(
            f"Target {series.name!r} has a single class ({classes[0]}): nothing to learn.")
    index = {name: i for i, name in enumerate(classes)}
    return np.array([index[v] for v in labels], dtype="int32"), {"classes": classes}


def _sort_key(value):
    return (0, float(value), "") if _is_number(str(value)) else (1, 0.0, str(value))


def _check_class_labels(series, task):
    values = series.dropna()
    if pd.api.types.is_float_dtype(values) and not np.all(np.mod(values, 1) == 0):
        raise DlrefError(
            f"Target {series.name!r} holds fractional numbers ({values.iloc[0]!r}, ...), not class "
            f"labels: {task} classification needs labels. For a continuous target use "
            "`dlref train regression`."
        )
    distinct = values.nunique()
    if distinct > max(100, len(values) // 2):
        raise DlrefError(
            f"Target {series.name!r} has {distinct} distinct values in {len(values)} rows: that is "
            "not a class label. For a continuous target use `dlref train regression`."
        )


def _encode_binary(labels, classes, name, positive_class):
    if positive_class is not None:
        if positive_class not in classes:
            raise DlrefError(
                f"--positive-class {positive_class!r} is not a value of {name!r}."
                f"{close_match(positive_class, classes)} Values: {', '.join(classes[:20])}."
            )
        negative = classes[0] if classes[0] != positive_class else classes[-1]
        negative = negative if len(classes) == 2 else f"not {positive_class}"
        return (labels == positive_class).astype("float32"), {
            "classes": [negative, positive_class], "positive_class": positive_class,
            "one_vs_rest": len(classes) > 2}
    if len(classes) > 2:
        raise DlrefError(
            f"Target {name!r} has {len(classes)} classes ({', '.join(classes[:10])}), and binary "
            "classification needs two. Use `dlref train multiclass`, or one-vs-rest with "
            f"--positive-class VALUE (e.g. --positive-class {classes[-1]})."
        )
    if len(classes) < 2:
        raise DlrefError(f"Target {name!r} has a single class ({classes[0]}): nothing to learn.")
    positive = next((c for c in classes if c.lower() in POSITIVE_WORDS), classes[1])
    negative = classes[0] if classes[1] == positive else classes[1]
    return (labels == positive).astype("float32"), {
        "classes": [negative, positive], "positive_class": positive}


# --- Features --------------------------------------------------------------------------------


def _check_finite(frame, what):
    problems = []
    for column in frame.columns:
        values = frame[column]
        if values.isna().any():
            problems.append(f"{column!r}: NaN in {_rows(values.isna())}")
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            infinite = np.isinf(values.to_numpy(dtype="float64"))
            if infinite.any():
                problems.append(f"{column!r}: inf in {_rows(infinite)}")
    if problems:
        raise DlrefError(
            f"Missing or infinite values in the {what}: " + "; ".join(problems)
            + ". Fill or drop those rows first."
        )


def fit_features(frame):
    """Learns the per-column transform from the training rows: standardize or one-hot."""
    columns = []
    for name in frame.columns:
        values = frame[name]
        if pd.api.types.is_numeric_dtype(values):
            numbers = values.to_numpy(dtype="float64")
            std = float(numbers.std())
            columns.append({"name": str(name), "kind": "numeric",
                            "mean": float(numbers.mean()), "std": std if std > 0 else 1.0})
        else:
            categories = sorted(values.astype(str).unique())
            columns.append({"name": str(name), "kind": "categorical", "categories": categories})
    return columns


def check_features(frame):
    """Refuses NaN / inf and string columns that are not categories, before anything is fitted."""
    _check_finite(frame, "features")
    for name in frame.columns:
        values = frame[name]
        if pd.api.types.is_numeric_dtype(values):
            continue
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().mean() >= 0.9:
            bad = values[numeric.isna()]
            raise DlrefError(
                f"Feature column {name!r} is numeric except for values like {bad.iloc[0]!r} in "
                f"{_rows(numeric.isna())}. Fix those cells (decimal comma? a text marker for "
                "missing?) and try again."
            )
        distinct = values.nunique()
        if distinct > MAX_CATEGORIES or distinct > 0.5 * len(values):
            raise DlrefError(
                f"Feature column {name!r} is non-numeric with {distinct} distinct values "
                f"(e.g. {values.iloc[0]!r}): too many to one-hot encode as a category. Drop it, "
                "or turn it into numbers, before training."
            )


def transform(frame, columns):
    """Applies the fitted transform; a category unseen in training becomes all zeros."""
    missing = [c["name"] for c in columns if c["name"] not in frame.columns]
    if missing:
        raise DlrefError(
            f"The data lacks feature columns the model was trained on: {', '.join(missing)}."
        )
    blocks = []
    for column in columns:
        values = frame[column["name"]]
        if column["kind"] == "numeric":
            numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64")
            # Text in a column trained as numbers would silently become NaN predictions.
            text = np.isnan(numbers) & values.notna().to_numpy()
            if text.any():
                raise DlrefError(
                    f"Feature column {column['name']!r} was numeric in training but has values "
                    f"like {values[text].iloc[0]!r} in {_rows(text)}. Fix those cells first."
                )
            blocks.append(((numbers - column["mean"]) / column["std"])[:, None])
        else:
            blocks.append(values.astype(str).to_numpy()[:, None] == np.array(column["categories"]))
    return np.hstack(blocks).astype("float32")


def feature_names(columns):
    names = []
    for column in columns:
        if column["kind"] == "numeric":
            names.append(column["name"])
        else:
            names.extend(f"{column['name']}={c}" for c in column["categories"])
    return names


# --- Loading ---------------------------------------------------------------------------------


def load(source, task, default_dataset, seed, val_fraction, test_fraction):
    """Loads, validates, splits and preprocesses a table for `task` (regression/binary/multiclass).

    Args:
        source: the Source; --data wins over --dataset, which wins over `default_dataset`.
        val_fraction, test_fraction: shares of the rows held out (stratified for classifiers).
    """
    frame, target, test_frame, where = _read_source(source, default_dataset)
    check_target(frame, target, where)
    features = frame.drop(columns=[target])
    if features.shape[1] == 0:
        raise DlrefError(f"{where} has no feature columns besides the target {target!r}.")
    check_features(features)
    y, target_meta = encode_target(frame[target], task, source.positive_class)
    train_idx, val_idx, test_idx = _split(y, task, seed, val_fraction, test_fraction, test_frame)
    if test_frame is not None:
        check_target(test_frame, target, where)
        y_test, _ = encode_target(test_frame[target], task, source.positive_class)
        x_test_frame = test_frame.drop(columns=[target])
    else:
        y_test, x_test_frame = y[test_idx], features.iloc[test_idx]
    columns = fit_features(features.iloc[train_idx])
    meta = {"task": task, "target": str(target), "source": where, "columns": columns,
            "features": feature_names(columns), **target_meta,
            "trivial": _trivial_stats(y[train_idx], task)}
    return Dataset(
        train=(transform(features.iloc[train_idx], columns), y[train_idx]),
        val=(transform(features.iloc[val_idx], columns), y[val_idx]),
        test=(transform(x_test_frame, columns), y_test),
        meta=meta,
        fingerprint=fingerprint(frame),
    )


def load_labelled(path, meta):
    """A user's labelled CSV as a test set, encoded with a trained run's meta (for evaluate)."""
    frame = read_csv(path)
    check_target(frame, meta["target"], str(path))
    task = meta["task"]
    if task == "regression":
        y, _ = encode_target(frame[meta["target"]], task)
    else:
        labels = frame[meta["target"]].astype(str)
        known = meta["classes"]
        unknown = sorted(set(labels) - set(known))
        if unknown and not meta.get("one_vs_rest"):
            raise DlrefError(
                f"{path} has classes the model never saw: {', '.join(unknown[:10])}. "
                f"Known: {', '.join(known)}."
            )
        if task == "binary":
            y = (labels == meta["positive_class"]).to_numpy(dtype="float32")
        else:
            y = labels.map({c: i for i, c in enumerate(known)}).to_numpy(dtype="int32")
    features = frame.drop(columns=[meta["target"]])
    known = [c["name"] for c in meta["columns"] if c["name"] in features]
    _check_finite(features[known], "features")
    x = transform(features, meta["columns"])
    empty = (x[:0], y[:0])
    return Dataset(train=empty, val=empty, test=(x, y), meta=meta, fingerprint=fingerprint(frame))


def _read_source(source, default_dataset):
    if source.data:
        return read_csv(source.data), source.target, None, str(source.data)
    name = source.dataset or default_dataset
    frame, target, test_frame = builtin.load(name)
    if source.target and source.target != target:
        raise DlrefError(f"Dataset {name} predicts {target!r}; --target applies to --data only.")
    return frame, target, test_frame, f"{name} (built-in)" if not source.dataset else name


def _split(y, task, seed, val_fraction, test_fraction, test_frame):
    from sklearn.model_selection import train_test_split

    if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DlrefError("val_fraction and test_fraction must be between 0 and 1, summing below 1.")
    if len(y) < 10:
        raise DlrefError(f"Only {len(y)} data rows: dlref needs at least 10 to train and test.")
    indices = np.arange(len(y))
    held_out = val_fraction + (0 if test_frame is not None else test_fraction)
    stratify = y if task != "regression" and np.bincount(y.astype(int)).min() >= 3 else None
    train_idx, rest_idx = train_test_split(indices, test_size=held_out, random_state=seed,
                                           stratify=stratify)
    if test_frame is not None:
        return train_idx, rest_idx, None
    rest_stratify = stratify[rest_idx] if stratify is not None else None
    try:
        val_idx, test_idx = train_test_split(rest_idx, test_size=test_fraction / held_out,
                                             random_state=seed, stratify=rest_stratify)
    except ValueError:  # A class too rare to stratify the small held-out part.
        val_idx, test_idx = train_test_split(rest_idx, test_size=test_fraction / held_out,
                                             random_state=seed)
    return train_idx, val_idx, test_idx


def _trivial_stats(y_train, task):
    if task == "regression":
        return {"mean": float(np.mean(y_train))}
    counts = np.bincount(y_train.astype(int))
    return {"majority": int(np.argmax(counts)), "prior": (counts / counts.sum()).tolist()}


def fingerprint(frame):
    digest = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


# --- Predicting ------------------------------------------------------------------------------


def predict(model, meta, path):
    """Predictions for a CSV of new rows: the input columns plus prediction (and probabilities)."""
    frame = read_csv(path)
    features = frame.drop(columns=[meta["target"]], errors="ignore")
    needed = [c["name"] for c in meta["columns"] if c["name"] in features.columns]
    _check_finite(features[needed], "features")
    outputs = model.predict(transform(features, meta["columns"]), verbose=0)
    result = frame.copy()
    column = f"predicted_{meta['target']}"
    if meta["task"] == "regression":
        result[column] = outputs[:, 0]
    elif meta["task"] == "binary":
        probability = outputs[:, 0]
        result[column] = np.where(probability >= meta.get("threshold", 0.5),
                                  meta["classes"][1], meta["classes"][0])
        result[f"probability_{meta['classes'][1]}"] = probability
    else:
        result[column] = np.array(meta["classes"])[outputs.argmax(axis=1)]
        for i, name in enumerate(meta["classes"]):
            result[f"probability_{name}"] = outputs[:, i]
    return result
