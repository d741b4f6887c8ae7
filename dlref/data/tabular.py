"""Tabular data for the regression, binary and multiclass recipes: from a file (or a built-in
table) to model inputs, the way a data scientist would prepare it by hand.

read (tables.py) -> rows without a target dropped -> columns chosen (--features, --drop) ->
kinds (columns.py: numeric, boolean, date, category; identifiers and constants left out) ->
gaps (--missing impute | drop | error) -> split (or --val-data / --test-data as given) ->
encoding fitted on the training split only -> summary and leakage check (overview.py).

Everything fitted (medians, scaler, categories, class labels, the trivial baselines'
statistics) is plain JSON in `meta`, so `dlref predict` repeats exactly what training did.
"""

import dataclasses
import hashlib
import json
import re
import sys

import numpy as np
import pandas as pd

from dlref.data import MISSING_MODES, Dataset, builtin, columns, overview, tables, target
from dlref.errors import DlrefError, close_match
from dlref.text import listing, plural

MAX_CATEGORIES = 50  # A text column keeps its 50 most frequent values; the rest are "(other)".


@dataclasses.dataclass
class Frames:
    """The raw tables of one source: the training file and the pre-split files, if any."""

    train: pd.DataFrame
    val: pd.DataFrame | None
    test: pd.DataFrame | None
    target: str
    where: str
    notes: list


# --- Loading ---------------------------------------------------------------------------------


def load(source, task, default_dataset, seed, val_fraction, test_fraction):
    """Reads, checks, splits and encodes a table for `task` (regression / binary / multiclass).

    Args:
        source: the Source; --data wins over --dataset, which wins over `default_dataset`.
        val_fraction, test_fraction: shares of the rows held out (stratified for classifiers),
            for the splits that no --val-data / --test-data file gives.
    """
    source.refuse_options(task, "date_column", "text_column", "embeddings")
    missing = _missing_mode(source)
    frames = read_frames(source, default_dataset)
    notes = list(frames.notes)
    rows_read = sum(len(frame) for _, frame in _splits(frames))
    name = frames.target
    names = select_columns(frames.train, name, source, frames.where)
    _check_same_columns(frames, names)
    notes += _drop_rows_without_target(frames)
    schema, left_out, problems = columns.infer_schema(frames.train, names, source.features or ())
    if problems:
        raise DlrefError("Some columns cannot be used as they are:\n  - " + "\n  - ".join(problems)
                         + "\nFix them in the file, or leave them out with --drop COLUMN.")
    if not schema:
        raise DlrefError(f"{frames.where} has no usable feature column besides the target "
                         f"{name!r} (left out: {_reasons(left_out)}). Keep one with --features.")
    tables_ = {split: columns.typed(frame, schema) for split, frame in _splits(frames)}
    _check_infinite(tables_, frames.where)
    gap_counts, dropped_rows, rows_before = _handle_gaps(frames, tables_, schema, missing)

    y, target_meta = target.encode(frames.train[name], task, source.positive_class)
    given = {split: target.apply(frames_[name], target_meta, task, where)
             for split, frames_, where in _given_splits(frames, source)}
    train_rows, val_rows, test_rows = split_rows(y, task, seed, val_fraction, test_fraction,
                                             need_val="val" not in given,
                                             need_test="test" not in given)
    train_table = tables_["train"].iloc[train_rows]
    encoding = columns.fit_encoding(train_table, schema, missing,
                                    source.max_categories or MAX_CATEGORIES)
    x_train, _ = columns.encode(train_table, encoding)
    unseen_notes = []
    val = _given_split(given, "val", tables_, encoding, unseen_notes) or (
        columns.encode(tables_["train"].iloc[val_rows], encoding)[0], y[val_rows])
    test = _given_split(given, "test", tables_, encoding, unseen_notes) or (
        columns.encode(tables_["train"].iloc[test_rows], encoding)[0], y[test_rows])

    meta = {"task": task, "target": str(name), "source": frames.where, "missing": missing,
            "schema": schema, "columns": encoding, "features": columns.feature_names(encoding),
            "left_out": left_out, **target_meta, "trivial": _trivial_stats(y[train_rows], task)}
    rows = {"read": rows_read,
            "train": len(train_rows), "validation": len(val[1]), "test": len(test[1])}
    notes += overview.summary(frames.where, name, _task_line(task, target_meta), rows, schema,
                              encoding, gap_counts, left_out, missing)
    line = overview.missing_line(gap_counts, missing, dropped_rows, rows_before)
    notes += [line] if line else []
    warnings = target.class_warnings(task, target_meta.get("classes", []), name, {
        "training": y[train_rows], "validation": val[1], "test": test[1]}) + unseen_notes
    warnings += overview.leakage_warnings(train_table, schema, encoding, y[train_rows], task,
                                          name, seed)
    return Dataset(train=(x_train, y[train_rows]), val=val, test=test, meta=meta,
                   fingerprint=fingerprint(frames, source), notes=notes, warnings=warnings)


def _given_split(given, split, tables_, encoding, notes):
    """(x, y) of a pre-split file, noting categories that training never saw."""
    if given.get(split) is None:
        return None
    x, unseen = columns.encode(tables_[split], encoding)
    if unseen:
        notes.append(f"Warning: the {split} file has values never seen in training "
                     f"({_unseen_text(unseen)}).")
    return x, given[split]


def _unseen_text(unseen):
    return "; ".join(f"{name}: {plural(count, 'row')}, e.g. {example!r}"
                     for name, (count, example) in unseen.items())


def read_frames(source, default_dataset):
    """The training table (and pre-split files) of a source, with the target's name."""
    if source.data:
        train, notes = tables.read_table(source.data)
        val, test = (_read_split(path, notes) for path in (source.val_data, source.test_data))
        check_target_name(train, source.target, source.data)
        return Frames(train, val, test, source.target.strip(), str(source.data), notes)
    if source.val_data or source.test_data:
        raise DlrefError("--val-data and --test-data go with --data (the training file).")
    name = source.dataset or default_dataset
    frame, name_of_target, test = builtin.load(name)
    if source.target and source.target != name_of_target:
        raise DlrefError(f"Dataset {name} predicts {name_of_target!r}; --target applies to "
                         "--data only.")
    where = f"{name} (built-in)" if not source.dataset else name
    return Frames(frame, None, test, name_of_target, where, [])


def _read_split(path, notes):
    if not path:
        return None
    frame, more = tables.read_table(path)
    notes += more
    return frame


def check_target_name(frame, name, where):
    if name is None:
        raise DlrefError(f"--target is required with --data: the column to predict in {where}.")
    target.check_present(frame, name.strip(), where)


def select_columns(frame, name, source, where):
    """The feature columns: --features (in the file's order) or all, less --drop and the target."""
    available = [c for c in frame.columns if c != name]
    drop = [c.strip() for c in source.drop]
    chosen = [c.strip() for c in source.features] if source.features is not None else None
    for option, given in (("--drop", drop), ("--features", chosen or [])):
        for column in given:
            if column == name:
                raise DlrefError(f"{option} names the target {name!r}: the target is never a "
                                 "feature. Name another --target, or leave it out of " + option)
            if column not in frame.columns:
                hint = tables.named_above(frame, column) or close_match(column, available)
                raise DlrefError(f"{option}: no column {column!r} in {where}.{hint} Columns: "
                                 f"{listing(available, 40)}.")
    names = [c for c in available if (chosen is None or c in chosen) and c not in drop]
    if not names:
        raise DlrefError(f"No feature column is left after --features / --drop (columns of "
                         f"{where}: {listing(available, 40)}).")
    return names


def _check_same_columns(frames, names):
    needed = set(names) | {frames.target}
    for option, frame in (("--val-data", frames.val), ("--test-data", frames.test)):
        if frame is None:
            continue
        lacking = [c for c in frames.train.columns if c in needed and c not in frame.columns]
        extra = [c for c in frame.columns if c not in frames.train.columns]
        if lacking or extra:
            parts = ([f"lacks {listing(lacking)}"] if lacking else []) + (
                [f"has {listing(extra)}, which the training file does not"] if extra else [])
            raise DlrefError(f"{option} has other columns than --data: it "
                             + "; it ".join(parts) + ". Give files with the same header.")


def _splits(frames):
    return [(split, frame) for split, frame in
            (("train", frames.train), ("val", frames.val), ("test", frames.test))
            if frame is not None]


def _given_splits(frames, source):
    return [(split, frame, path or f"the {split} set of {frames.where}") for split, frame, path in
            (("val", frames.val, source.val_data), ("test", frames.test, source.test_data))
            if frame is not None]


def _drop_rows_without_target(frames):
    notes = []
    for split, frame in _splits(frames):
        frame[frames.target] = target.clean(frame[frames.target])
        empty = frame[frames.target].isna()
        if empty.all():
            raise DlrefError(f"The target {frames.target!r} is empty in every row of the "
                             f"{split} data.")
        if empty.any():
            setattr(frames, split, frame[~empty])
            where = "" if split == "train" else f" of the {split} file"
            notes.append(f"Dropped {plural(int(empty.sum()), 'row')}{where} whose target "
                         f"{frames.target!r} is missing.")
        _check_finite_target(frame[~empty][frames.target], frames.target)
    return notes


def _check_finite_target(values, name):
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        infinite = np.isinf(values.to_numpy(dtype="float64"))
        if infinite.any():
            raise DlrefError(f"Infinite values in the target {name!r}: inf in "
                             f"{_rows(infinite, values)}. Fix or remove those rows.")


def _check_infinite(tables_, where):
    problems = []
    for split, table in tables_.items():
        for name in table.columns:
            values = table[name]
            if pd.api.types.is_float_dtype(values):
                infinite = np.isinf(values.to_numpy())
                if infinite.any():
                    problems.append(f"{name!r}: inf in {_rows(infinite, values)}"
                                    + ("" if split == "train" else f" of the {split} file"))
    if problems:
        raise DlrefError(f"Infinite values in the features of {where}: " + "; ".join(problems)
                         + ". Replace them, or leave the column out with --drop COLUMN.")


def _handle_gaps(frames, tables_, schema, missing):
    """Applies --missing; returns ({column: rows with a gap}, rows dropped, rows before)."""
    found = {split: columns.gaps(table, schema) for split, table in tables_.items()}
    counts = {spec["name"]: int(sum(g[spec["name"]].sum() for g in found.values()))
              for spec in schema}
    if missing == "error" and any(counts.values()):
        problems = [f"{name!r}: missing in {_rows(found['train'][name], frames.train)}"
                    for name, count in counts.items() if found["train"][name].any()]
        problems += [f"{name!r}: missing in {plural(count, 'row')} of the pre-split files"
                     for name, count in counts.items() if count and not found["train"][name].any()]
        raise DlrefError("Missing values in the features: " + "; ".join(problems) + ". Fill or "
                         "drop those rows first, or let dlref do it: --missing impute (median "
                         "and indicator, the default) or --missing drop.")
    if missing != "drop" or not any(counts.values()):
        return counts, 0, 0
    before = sum(len(table) for table in tables_.values())
    for split, table in list(tables_.items()):
        keep = ~pd.concat(found[split].values(), axis=1).any(axis=1)
        tables_[split] = table[keep]
        setattr(frames, split, getattr(frames, split)[keep])
        if not keep.any():
            raise DlrefError(f"Every row of the {split} data has a gap, so --missing drop leaves "
                             "nothing: use --missing impute, or --drop the emptiest columns.")
    return counts, before - sum(len(table) for table in tables_.values()), before


def _missing_mode(source):
    missing = source.missing or "impute"
    if missing not in MISSING_MODES:
        raise DlrefError(f"--missing must be one of {', '.join(MISSING_MODES)}, got {missing!r}.")
    if source.max_categories is not None and source.max_categories < 1:
        raise DlrefError(f"--max-categories must be at least 1, got {source.max_categories}.")
    return missing


def split_rows(y, task, seed, val_fraction, test_fraction, need_val=True, need_test=True):
    """Row positions of (train, val, test); a split given as a file gets none."""
    from sklearn.model_selection import train_test_split

    if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DlrefError("val_fraction and test_fraction must be between 0 and 1, summing below 1.")
    if len(y) < 10:
        raise DlrefError(f"Only {plural(len(y), 'data row')}: dlref needs at least 10 to train "
                         "and test.")
    if need_test and test_fraction == 0:
        raise DlrefError("test_fraction = 0 leaves no test rows: give a pre-split file with "
                         "--test-data FILE, or a test_fraction above 0.")
    indices, empty = np.arange(len(y)), np.arange(0)
    held = {"val": val_fraction if need_val else 0.0, "test": test_fraction if need_test else 0.0}
    if not sum(held.values()):
        return indices, empty, empty
    stratify = y if task != "regression" and np.bincount(y.astype(int)).min() >= 3 else None
    train_idx, rest_idx = train_test_split(indices, test_size=sum(held.values()),
                                           random_state=seed, stratify=stratify)
    if not (need_val and need_test):
        return (train_idx, rest_idx, empty) if need_val else (train_idx, empty, rest_idx)
    rest_stratify = stratify[rest_idx] if stratify is not None else None
    share = held["test"] / sum(held.values())
    try:
        val_idx, test_idx = train_test_split(rest_idx, test_size=share, random_state=seed,
                                             stratify=rest_stratify)
    except ValueError:  # A class too rare to stratify the small held-out part.
        val_idx, test_idx = train_test_split(rest_idx, test_size=share, random_state=seed)
    return train_idx, val_idx, test_idx


def _trivial_stats(y_train, task):
    if task == "regression":
        return {"mean": float(np.mean(y_train))}
    counts = np.bincount(y_train.astype(int))
    return {"majority": int(np.argmax(counts)), "prior": (counts / counts.sum()).tolist()}


def _task_line(task, target_meta):
    if task == "binary":
        return f"binary, positive class {target_meta['positive_class']!r}"
    if task == "multiclass":
        return f"multiclass, {plural(len(target_meta['classes']), 'class', 'classes')}"
    return "regression"


def fingerprint(frames, source=None):
    """Identifies the rows and the options that shape them: a resume, a tuned config or an
    evaluation on other data is noticed."""
    digest = hashlib.sha256()
    for _, frame in _splits(frames) if isinstance(frames, Frames) else [("", frames)]:
        digest.update(",".join(map(str, frame.columns)).encode())
        digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    if source is not None:
        shaping = {k: v for k, v in source.to_dict().items()
                   if k in ("target", "positive_class", "missing", "drop", "features",
                            "max_categories")}
        digest.update(json.dumps(shaping, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _rows(mask, values):
    """'2 rows (file lines 5, 9)': the rows of `values` (a table or column read by
    read_table, numbered by position) where `mask` is true."""
    rows = np.asarray(values.index)[np.asarray(mask)]
    return f"{plural(len(rows), 'row')} (file lines {tables.file_lines(rows, values)})"


def _reasons(left_out):
    return "; ".join(f"{k}: {v}" for k, v in left_out.items()) or "none"


# --- New rows: evaluate --data and predict -----------------------------------------------------


def features_for(frame, meta, where):
    """New rows encoded as in training: (x, notes); gaps filled with the training medians and
    categories never seen in training counted, per column, in the notes."""
    schema = meta.get("schema") or _schema_of_old_run(meta)
    lacking = [spec["name"] for spec in schema if spec["name"] not in frame.columns]
    if lacking:
        raise DlrefError(f"{where} lacks feature columns the model was trained on: "
                         f"{listing(lacking, 20)}.")
    table = columns.typed(frame, schema)
    gap_rows = pd.concat(columns.gaps(table, schema).values(), axis=1).any(axis=1)
    notes = _text_in_numbers(frame, table, schema)
    if gap_rows.any():
        if meta.get("missing") == "error":
            raise DlrefError(f"{where}: {plural(int(gap_rows.sum()), 'row')} with gaps, and the "
                             "model was trained with --missing error.")
        how = ("the model was trained on rows without gaps (--missing drop)"
               if meta.get("missing") == "drop" else "as in training")
        notes.append(f"{plural(int(gap_rows.sum()), 'row')} with gaps: filled with the training "
                     f"medians (text: no category or (missing)); {how}.")
    x, unseen = columns.encode(table, meta["columns"])
    if unseen:
        notes.append(f"Warning: values never seen in training ({_unseen_text(unseen)}); they "
                     "count as (other) where training had rare values, else as no category.")
    return x, notes


def _text_in_numbers(frame, table, schema):
    """Warnings for cells of text where training had numbers (they are treated as gaps)."""
    found = []
    for spec in schema:
        if spec["kind"] not in ("numeric", "boolean"):
            continue
        raw = frame[spec["name"]]
        text = raw.notna() & table[spec["name"]].isna()
        text &= ~raw.astype(str).str.strip().str.lower().isin(tables.MISSING_WORDS)
        if text.any():
            found.append(f"{spec['name']}: {plural(int(text.sum()), 'row')}, e.g. "
                         f"{raw[text].iloc[0]!r}")
    if not found:
        return []
    return [f"Warning: text where training had numbers ({'; '.join(found)}); treated as gaps."]


def _schema_of_old_run(meta):
    """Runs made before dlref knew column kinds: numbers and categories by their encoding."""
    kinds = {"numeric": "numeric", "categorical": "category"}
    return [{"name": c["name"], "kind": kinds[c["kind"]]} for c in meta["columns"]]


def load_labelled(path, meta):
    """A user's labelled file as a test set, encoded with a trained run's meta (for evaluate)."""
    frame, notes = tables.read_table(path)
    name = meta["target"]
    target.check_present(frame, name, str(path))
    frame[name] = target.clean(frame[name])
    empty = frame[name].isna()
    if empty.any():
        notes.append(f"Dropped {plural(int(empty.sum()), 'row')} whose target {name!r} is "
                     "missing.")
        frame = frame[~empty]
    y = target.apply(frame[name], meta, meta["task"], str(path))
    x, more = features_for(frame, meta, str(path))
    _say(notes + more)
    empty = (x[:0], y[:0])
    return Dataset(train=empty, val=empty, test=(x, y), meta=meta,
                   fingerprint=fingerprint(frame))


def predict(model, meta, path):
    """Predictions for a file of new rows: the input columns plus prediction (and probabilities)."""
    frame, notes = tables.read_table(path)
    frame = _without_target_column(frame, meta, notes)
    x, more = features_for(frame.drop(columns=[meta["target"]], errors="ignore"), meta, str(path))
    _say(notes + more)
    return with_predictions(frame, model.predict(x, verbose=0), meta)


def _without_target_column(frame, meta, notes):
    """A file of new rows without a header, one column narrower than the headerless training
    file because it has no target column: its columns named as in training, skipping the
    target's number (wine.data's class is column_1, so new rows begin at column_2)."""
    number = re.compile(r"column_(\d+)$")
    names = [spec["name"] for spec in meta.get("schema", [])] + [meta["target"]]
    found = [int(m.group(1)) for m in map(number.match, names) if m]
    target_match = number.match(meta["target"])
    if not (frame.attrs.get(tables.HEADERLESS) and target_match and found
            and frame.shape[1] == max(found) - 1):
        return frame
    left_out = int(target_match.group(1))
    renamed = {f"column_{i}": f"column_{i + (i >= left_out)}" for i in range(1, max(found))}
    notes.append(f"{frame.shape[1]} columns without a header, one fewer than in training: read "
                 f"as the training columns without the target {meta['target']!r}.")
    return frame.rename(columns=renamed)


def with_predictions(frame, outputs, meta):
    """A copy of `frame` with the predicted value or class (and each class' probability)."""
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


def _say(lines):
    for line in lines:
        print(line, file=sys.stderr)
