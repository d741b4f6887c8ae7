"""One look at a table before training: a short summary of what dlref made of each column, and
a warning for a column that gives the answer away (leakage)."""

import math
import warnings

import numpy as np

from dlref.data.columns import encode
from dlref.text import listing, plural, shown_path

LEAKAGE_SCORE = 0.99  # ROC-AUC (classifiers) or R² (regression) of one column on its own.
LEAKAGE_ROWS = 5000  # The check looks at this many training rows at most.
SHOWN_FEATURES = 25  # A wider table lists this many features, then counts the rest by kind.


def summary(where, target, task_line, rows, schema, encoding, gaps, left_out, missing):
    """The lines printed before epoch 1.

    Args:
        rows: ordered {label: count}, e.g. {"read": 891, "train": 623, ...}.
        gaps: {column: rows with a gap, over every split}.
        left_out: {column: reason}.
    """
    lines = [f"Data: {shown_path(where)}, target {target!r}: {task_line}",
             "Rows: " + ", ".join(f"{label} {count:,}" for label, count in rows.items())]
    lines.append(f"Features: {plural(len(schema), 'column')} -> "
                 f"{plural(_width(encoding), 'input')}")
    by_name = _encoding_by_column(schema, encoding)
    details = {spec["name"]: _describe(spec, by_name[spec["name"]], gaps.get(spec["name"], 0),
                                       missing) for spec in schema}
    # A wide table lists what needs a word (kinds other than numeric, gaps, categories) and
    # counts the plain numeric columns.
    plain = [s["name"] for s in schema if s["kind"] == "numeric" and not details[s["name"]]]
    wide = len(schema) > SHOWN_FEATURES
    listed = [s for s in schema if not wide or s["name"] not in plain][:SHOWN_FEATURES]
    width = max((len(spec["name"]) for spec in listed), default=0)
    for spec in listed:
        lines.append(f"  {spec['name']:<{width}}  {spec['kind']:<8}  {details[spec['name']]}"
                     .rstrip())
    if wide and plain:
        lines.append(f"  {plural(len(plain), 'numeric column')} without gaps: {listing(plain, 6)}")
    hidden = len(schema) - len(listed) - (len(plain) if wide else 0)
    if hidden > 0:
        lines.append(f"  ... and {plural(hidden, 'more column')}")
    if left_out:
        reasons = "; ".join(f"{name}: {reason}" for name, reason in list(left_out.items())[:8])
        more = f"; and {len(left_out) - 8} more" if len(left_out) > 8 else ""
        lines.append(f"Left out: {reasons}{more}. To keep a column, name it in --features.")
    return lines


def missing_line(gaps, missing, rows_dropped=0, rows_before=0):
    """The one line saying what was done about gaps, to which columns and how many rows."""
    columns = {name: count for name, count in gaps.items() if count}
    if missing == "drop" and rows_dropped:
        return (f"Missing values: dropped {plural(rows_dropped, 'row')} of {rows_before:,} with a "
                f"gap (in {listing(columns)}); --missing impute keeps them.")
    if not columns:
        return None
    shown = ", ".join(f"{name} ({plural(count, 'row')})" for name, count in columns.items())
    return (f"Missing values: imputed {shown}; numbers with the training median and a "
            "<column>_missing input, text as a (missing) category (--missing drop|error to "
            "change this).")


def _describe(spec, encoded, gap_count, missing):
    parts = []
    if spec["kind"] == "category":
        column = encoded[0]
        kept = len(column["categories"])
        if column.get("other"):
            parts.append(f"{kept} most frequent values + (other)")
        else:
            parts.append(plural(kept, "value"))
    elif spec["kind"] == "date":
        parts.append(f"-> {', '.join(spec['parts'] + ['days'])} (days since "
                     f"{spec['origin'][:10]})")
    if gap_count:
        parts.append(f"{plural(gap_count, 'gap')}" + _gap_fill(spec, encoded, missing))
    return "; ".join(parts)


def _gap_fill(spec, encoded, missing):
    if missing != "impute":
        return ""
    if spec["kind"] == "category":
        return " -> (missing)" if encoded[0].get("missing") else ""
    column = encoded[0]
    indicator = f" + {column['name']}_missing" if column.get("indicator") else ""
    if spec["kind"] == "date":
        return f" -> medians{indicator and ' + indicators'}"
    return f" -> median {column['fill']:.4g}{indicator}"


def _encoding_by_column(schema, encoding):
    found = {spec["name"]: [] for spec in schema}
    for column in encoding:
        found.setdefault(column.get("column", column["name"]), []).append(column)
    return found


def _width(encoding):
    width = 0
    for column in encoding:
        if column["kind"] == "numeric":
            width += 1 + bool(column.get("indicator"))
        else:
            width += len(column["categories"]) + bool(column.get("other")) + bool(
                column.get("missing"))
    return width


# --- Leakage ---------------------------------------------------------------------------------


def leakage_warnings(table, schema, encoding, y, task, target, seed=0):
    """Warnings for columns that alone predict the target almost perfectly on the training split.

    A depth-3 decision tree (8 leaves at most, so it cannot memorize rows) on each column by
    itself, scored on the rows it was fitted on: ROC-AUC for classifiers, R² for regression
    (with a straight line too, which catches a rescaled copy of a numeric target).
    """
    if len(y) < 20:
        return []
    y = np.asarray(y, dtype="float64")
    # A wide table (MNIST: 784 columns) is checked on fewer rows, so the check stays a second
    # or two: a column that gives the answer away shows it on a thousand rows as well.
    limit = max(1000, min(LEAKAGE_ROWS, 200_000 // max(1, len(schema))))
    rows = np.random.default_rng(seed).permutation(len(y))[:limit]
    sample, y = table.iloc[rows], y[rows]
    by_name = _encoding_by_column(schema, encoding)
    found = []
    for spec in schema:
        x, _ = encode(sample, by_name[spec["name"]])
        with warnings.catch_warnings():  # sklearn's notes on rare classes are not for users.
            warnings.simplefilter("ignore")
            if spec["kind"] == "category":
                score, measure = _group_score(x, y, task)
            else:
                score, measure = _tree_score(x, y, task, seed)
        if score >= LEAKAGE_SCORE:
            found.append(
                f"Warning: column {spec['name']!r} alone predicts {target!r} almost perfectly on "
                f"the training split ({measure} {score:.3f}). If it is a copy of the answer, or "
                f"not known when you predict, leave it out: --drop {_quoted(spec['name'])}")
    return found


def _tree_score(x, y, task, seed):
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    if task == "regression":
        tree = DecisionTreeRegressor(max_depth=3, random_state=seed).fit(x, y)
        score = _r2(y, tree.predict(x))
        if x.shape[1] == 1:  # A rescaled copy of the target is a straight line.
            with np.errstate(all="ignore"):
                correlation = np.corrcoef(x[:, 0].astype("float64"), y)[0, 1]
            score = max(score, float(np.nan_to_num(correlation) ** 2))
        return score, "R²"
    if len(np.unique(y)) < 2:
        return 0.0, "ROC-AUC"
    tree = DecisionTreeClassifier(max_depth=3, random_state=seed).fit(x, y.astype(int))
    return _auc(y.astype(int), tree.predict_proba(x), tree.classes_), "ROC-AUC"


def _group_score(x, y, task):
    """A category on its own: each value predicts the training mean (or class shares) of its
    rows, which is what a model could learn from that column alone."""
    groups = np.where(x.any(axis=1), x.argmax(axis=1), -1)
    _, inverse = np.unique(groups, return_inverse=True)
    if task == "regression":
        means = np.bincount(inverse, weights=y) / np.bincount(inverse)
        return _r2(y, means[inverse]), "R²"
    labels = y.astype(int)
    classes = np.unique(labels)
    if len(classes) < 2:
        return 0.0, "ROC-AUC"
    shares = np.stack([np.bincount(inverse, weights=labels == k) for k in classes], axis=1)
    shares /= shares.sum(axis=1, keepdims=True)
    return _auc(labels, shares[inverse], classes), "ROC-AUC"


def _r2(y, predicted):
    total = np.sum((y - np.mean(y)) ** 2)
    return float(1 - np.sum((y - predicted) ** 2) / total) if total > 0 else 0.0


def _auc(labels, probabilities, classes):
    """ROC-AUC of `probabilities`, whose columns are `classes` (one-vs-rest macro for more than
    two); 0 where it is undefined. From ranks (dlref.metrics): 1.5 ms against sklearn's
    roc_auc_score's 16 ms on 1,000 rows of 10 classes here, and the check scores every column."""
    from dlref.metrics import roc_auc

    if probabilities.shape[1] == 2:
        score = roc_auc(labels, probabilities[:, 1])
    else:
        positions = np.searchsorted(classes, labels)
        score = roc_auc(positions, probabilities)
    return 0.0 if math.isnan(score) else score


def _quoted(name):
    return name if name.replace("_", "").replace("-", "").replace(".", "").isalnum() else repr(name)
