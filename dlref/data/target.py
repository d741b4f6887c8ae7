"""The target column: which task it is, and its encoding (numbers, class indices, 0/1)."""

from pathlib import Path

import numpy as np
import pandas as pd

from dlref.data.columns import TRUE_WORDS, plain
from dlref.data.tables import HEADERLESS, is_number, named_above, sheet_read
from dlref.errors import DlrefError, close_match
from dlref.text import listing, plural

POSITIVE_WORDS = {"positive", "pos"} | TRUE_WORDS  # The positive class of a yes / no target.
MAX_CLASS_NUMBERS = 20  # More distinct whole numbers than this is a quantity, not a label.


def check_present(frame, target, where):
    numbered = (" (the file has no header row, so dlref numbered its columns)"
                if frame.attrs.get(HEADERLESS) else "")
    if target is None:
        raise DlrefError(f"--target is required with --data: the column to predict in {where}. "
                         f"Columns{numbered}: {listing(frame.columns, 40)}.")
    if target not in frame.columns:
        raise DlrefError(
            f"No target column {target!r} in {where}."
            f"{named_above(frame, target) or close_match(target, frame.columns)}"
            f"{sheet_read(frame)} "
            f"Columns{numbered}: {listing(frame.columns, 40)}."
        )


def clean(series):
    """A target of numbers with a few words for "missing" (n/a, unknown, ?) becomes numbers,
    those cells gaps, so the rows are dropped rather than the numbers read as labels."""
    from dlref.data.tables import MISSING_WORDS, is_text

    if not is_text(series):
        return series
    present = series.dropna().astype(str).str.strip()
    numbers = pd.to_numeric(present, errors="coerce")
    stray = present[numbers.isna()]
    if len(present) and numbers.notna().mean() >= 0.9 and (
            stray.str.lower().isin(MISSING_WORDS).all()):
        return pd.to_numeric(series.astype(object), errors="coerce").rename(series.name)
    return series


def task_of(source):
    """(recipe, reason) for `dlref train --data F --target T` without a recipe name."""
    from dlref.data.tables import read_table

    if Path(source.data).is_dir():
        from dlref.data.images import has_images

        if has_images(source.data):
            return "cnn", "a folder of images: one sub-folder per class -> cnn"
        return "text", "a folder: one sub-folder of text files per class -> text"
    frame, _ = read_table(source.data)
    check_present(frame, source.target.strip(), source.data)
    task, reason = infer_task(clean(frame[source.target.strip()]))
    if task != "regression":
        if source.text_column:
            return "text", f"{reason}, from the texts of --text-column -> text"
        column, words = free_text_column(frame, source.target.strip())
        if column:
            return "text", (f"{reason}; {column!r} holds free text (median {words} words) "
                            "-> text")
    if source.positive_class is not None and task == "multiclass":
        return "binary", f"--positive-class {source.positive_class} -> binary, one-vs-rest"
    return task, reason


def free_text_column(frame, target):
    """(column, median word count) of the column with the longest free text (most values
    distinct, a median of 8 words or more: names and addresses are shorter), or (None, 0).
    Real corpora repeat some texts (spam templates, retweets, "Great product!"): half of the
    values distinct is enough at that length; a category of long labels repeats far more."""
    from dlref.data.tables import is_text

    found = (None, 0)
    for name in frame.columns:
        values = frame[name].dropna()
        if name == target or not is_text(frame[name]) or len(values) < 10:
            continue
        words = int(values.astype(str).str.split().str.len().median())
        if values.nunique() >= 0.5 * len(values) and words >= 8 and words > found[1]:
            found = (name, words)
    return found


def infer_task(series):
    """(task, reason) for `dlref train --data F --target T` without a recipe name."""
    values = series.dropna()
    if values.empty:
        raise DlrefError(f"Target {series.name!r} is empty: no row has a value to learn.")
    distinct = values.nunique()
    shown = ", ".join(plain(v) for v in sorted(values.unique(), key=sort_key)[:5])
    shown += ", ..." if distinct > 5 else ""
    if distinct == 1:
        raise DlrefError(f"Target {series.name!r} has a single value ({shown}): nothing to learn.")
    if distinct == 2:
        return "binary", f"2 distinct values ({shown}) -> binary"
    if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        _check_class_count(series, values, "multiclass")
        return "multiclass", f"{distinct} distinct labels ({shown}) -> multiclass"
    if not np.all(np.mod(values, 1) == 0):
        return "regression", "fractional numbers -> regression"
    if distinct <= MAX_CLASS_NUMBERS:
        return "multiclass", (f"{distinct} distinct whole numbers ({shown}) -> multiclass; "
                              "to predict them as a quantity, name the recipe: "
                              "dlref train regression")
    return "regression", f"{distinct} distinct whole numbers -> regression"


def encode(series, task, positive_class=None):
    """Returns (y, meta) where meta holds the class names or nothing for regression."""
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            raise DlrefError(
                f"Target {series.name!r} is not numeric (values like {plain(series.iloc[0])}): "
                "regression needs numbers. For class labels use `dlref train binary` or "
                "`dlref train multiclass`."
            )
        if series.nunique() <= 1:
            raise DlrefError(f"Target {series.name!r} has the same value in every row "
                             f"({plain(series.iloc[0])}): nothing to learn.")
        return series.to_numpy(dtype="float32"), {}
    _check_class_labels(series, task)
    text = labels_as_text(series)
    labels = text.to_numpy(dtype=object)
    classes = sorted(text.unique(), key=sort_key)
    if task == "binary":
        return _encode_binary(labels, classes, series.name, positive_class)
    if len(classes) < 2:
        raise DlrefError(
            f"Target {series.name!r} has a single class ({classes[0]}): nothing to learn.")
    index = {name: i for i, name in enumerate(classes)}
    return np.array([index[v] for v in labels], dtype="int32"), {"classes": classes}


def _spelled(label):
    """A label with letter case and spacing left aside ('New  York' -> 'new york')."""
    return " ".join(str(label).split()).casefold()


def label_warnings(classes, name):
    """Warning lines for classes that differ only in letter case or spacing ('pos' and 'POS',
    'New York' and 'new  york'): kept apart as the file writes them, but most often one class
    written two ways."""
    groups = {}
    for label in classes:
        groups.setdefault(_spelled(label), []).append(str(label))
    return [f"Warning: the classes {' and '.join(repr(label) for label in labels)} of {name!r} "
            "differ only in letter case or spacing; they are trained as different classes. If "
            "they are one, write them alike in the file."
            for labels in groups.values() if len(labels) > 1]


# What a class missing from a split costs, by split.
_MISSING_FROM = {"training": "the network cannot learn it",
                 "validation": "the choice of the kept epoch does not weigh it",
                 "test": "the test metrics cannot measure it"}


def split_warnings(classes, name, splits, unit="row"):
    """Warning lines for the classes that some split has no row of (a class of 3 rows in a
    table of 1,600 gave 2 training, 1 validation and 0 test rows).

    Args:
        classes: the class names, by label (label i is classes[i]).
        splits: {"training" | "validation" | "test": labels of that split}.
        unit: what a split holds: "row", or "image" for image folders.
    """
    counts = {split: np.bincount(np.asarray(labels, dtype=int), minlength=len(classes))
              for split, labels in splits.items()}
    found = []
    for index, label in enumerate(classes):
        missing = [split for split, count in counts.items() if not count[index]]
        if not missing:
            continue
        total = sum(int(count[index]) for count in counts.values())
        rows = ", ".join(f"{count[index]:,} {split}" for split, count in counts.items())
        costs = "; ".join(_MISSING_FROM[split] for split in missing)
        found.append(f"Warning: class {label!r} of {name!r} has {total:,} "
                     f"{unit if total == 1 else unit + 's'} ({rows}): {costs}. More {unit}s of "
                     "it, or merging it into a neighbouring class, would help.")
    return found


def class_warnings(task, classes, name, splits):
    """The warnings about a classifier's classes, for tables and texts alike: classes written
    two ways, and (for more than two) classes some split has no row of (`split_warnings`)."""
    found = label_warnings(classes, name)
    if task == "multiclass":
        found += split_warnings(classes, name, splits)
    return found


def apply(series, meta, task, where):
    """Encodes the target of another file (pre-split, or evaluate --data) with the classes
    found in training; a class the model never saw is refused (one-vs-rest excepted)."""
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(series) or pd.api.types.is_bool_dtype(series):
            raise DlrefError(f"The target {series.name!r} in {where} is not numeric (values "
                             f"like {plain(series.iloc[0])}).")
        return series.to_numpy(dtype="float32")
    labels = labels_as_text(series)
    known = meta["classes"]
    unknown = sorted(set(labels) - set(known), key=sort_key)
    if unknown and not meta.get("one_vs_rest"):
        raise DlrefError(f"{where} has classes the model never saw: {', '.join(unknown[:10])}. "
                         f"Known: {', '.join(known)}.{_written_apart(unknown, known)}")
    if task == "binary":
        return (labels == meta["positive_class"]).to_numpy(dtype="float32")
    return labels.map({c: i for i, c in enumerate(known)}).to_numpy(dtype="int32")


def _written_apart(unknown, known):
    """' ... differ from a known class only in case, spacing or end punctuation' when they do
    (UCI's adult.test writes '>50K.' for adult.data's '>50K'), else ''."""
    def bare(label):  # '>50K.' and ' >50k' are '>50k'; '<=50K' stays apart from '>50K'.
        return _spelled(label).strip(" .,;:!?\"'")

    by_bare = {}
    for label in known:
        by_bare.setdefault(bare(label), []).append(label)
    by_bare = {key: labels[0] for key, labels in by_bare.items() if len(labels) == 1}
    pairs = [(label, by_bare[bare(label)]) for label in unknown if bare(label) in by_bare]
    if not pairs:
        return ""
    shown = ", ".join(f"{a!r} for {b!r}" for a, b in pairs[:4])
    return (f" {plural(len(pairs), 'of them differs', 'of them differ')} from a known class only "
            f"in letter case, spacing or end punctuation ({shown}): write the classes alike "
            "in both files.")


def labels_as_text(series):
    """Class labels as the strings the model's classes are named by (3.0 in a float column
    that only had gaps besides whole numbers is '3')."""
    if pd.api.types.is_float_dtype(series) and np.all(np.mod(series.dropna(), 1) == 0):
        series = series.astype("Int64")
    return series.astype(str)


def sort_key(value):
    return (0, float(value), "") if is_number(str(value)) else (1, 0.0, str(value))


def _check_class_labels(series, task):
    values = series.dropna()
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric and not np.all(np.mod(values, 1) == 0):
        fraction = next(v for v in values if v % 1 != 0)
        raise DlrefError(
            f"Target {series.name!r} holds fractional numbers ({plain(fraction)}, ...), not class "
            f"labels: {task} classification needs labels. For a continuous target use "
            "`dlref train regression`."
        )
    distinct = values.nunique()
    if numeric and distinct > (MAX_CLASS_NUMBERS if task == "binary" else 100):
        raise DlrefError(
            f"Target {series.name!r} holds {distinct} distinct numbers: that is a quantity to "
            f"predict, not {'two classes' if task == 'binary' else 'class labels'}. Use "
            "`dlref train regression`"
            + (", or one-vs-rest with --positive-class VALUE." if task == "binary" else ".")
        )
    _check_class_count(series, values, task)


def _check_class_count(series, values, task):
    distinct = values.nunique()
    if distinct > max(100, len(values) // 2):
        numeric = pd.api.types.is_numeric_dtype(values)
        advice = ("For a continuous target use `dlref train regression`." if numeric else
                  "Is it an identifier or free text? Choose another --target.")
        raise DlrefError(f"Target {series.name!r} has {distinct} distinct values in {len(values)} "
                         f"rows: that is not a class label for {task}. {advice}")


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
