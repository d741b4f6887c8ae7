"""Feature columns: what kind each one is, and the encoding fitted on the training split.

Two stages, both saved with the run as JSON so that `predict` repeats them on new rows:

1. The schema (`infer_schema`, decided on the training file): each usable column's kind:
   numeric, boolean (True/False, yes/no, 0/1 -> 0/1), date (-> year, month, day, day of week,
   hour, elapsed days) or category. Columns that cannot help are left out with a reason:
   constant, an identifier (row numbers, nearly all values distinct), or empty.
2. The encoding (`fit_encoding`, fitted on the training split only): for each numeric input
   its median (for gaps), a 0/1 `<column>_missing` indicator where training had gaps, and the
   scaler; for each category its most frequent values, with "(other)" and "(missing)" slots.
"""

import re
import warnings

import numpy as np
import pandas as pd

from dlref.data.tables import MISSING_CODES, MISSING_WORDS, is_text
from dlref.text import plural

# Yes and no as exports write them, also in German, French, Spanish, Italian, Portuguese, Polish.
TRUE_WORDS = {"true", "yes", "y", "t", "1", "1.0", "ja", "j", "oui", "si", "sí", "sì", "sim",
              "tak", "wahr", "vrai", "verdadero", "vero"}
FALSE_WORDS = {"false", "no", "n", "f", "0", "0.0", "nein", "non", "não", "nao", "nie",
               "falsch", "faux", "falso"}
_DATE_LIKE = re.compile(
    r"^\d{4}-\d{1,2}(-\d{1,2})?([ T]\d{1,2}:\d{2}.*)?$"  # 2024-03-01, 2024-03-01 12:30:00+01
    r"|^\d{1,4}[/.]\d{1,2}[/.]\d{1,4}( \d{1,2}:\d{2}.*)?$"  # 03/01/2024, 1.3.2024 12:30
    r"|^[A-Za-z]{3,9}\.? \d{1,2},? \d{4}|^\d{1,2}[ -][A-Za-z]{3,9}[ -]\d{2,4}"  # Mar 1, 2024
)
DATE_PARTS = ("year", "month", "day", "dayofweek", "hour")
ID_MIN_ROWS = 20  # Below this, "every value distinct" says little.


# --- 1. The schema -------------------------------------------------------------------------


def infer_schema(frame, names, keep=()):
    """Kinds of the columns `names` of `frame`; returns (schema, left_out, problems).

    Args:
        keep: columns the user asked for by name (--features): never left out as constant or
            identifiers.

    Returns:
        schema: [{"name", "kind", ...}] of the usable columns, in order.
        left_out: {name: reason} of columns left out, with a notice.
        problems: messages about columns that cannot be used as they are (one error for all).
    """
    schema, left_out, problems = [], {}, []
    codes = frame.attrs.get(MISSING_CODES, {})
    for name in names:
        spec, reason = _infer_column(frame[name], name, name in keep)
        if isinstance(spec, dict):
            if name in codes and spec["kind"] == "numeric":  # New rows' codes are gaps too.
                spec["missing_code"] = codes[name]
            schema.append(spec)
        elif spec == "left out":
            left_out[name] = reason
        else:
            problems.append(reason)
    return schema, left_out, problems


def _infer_column(values, name, keep):
    present = values.dropna()
    if present.empty:
        if name.startswith("Unnamed:"):  # A trailing delimiter gave an empty, unnamed column.
            return "left out", "empty and unnamed"
        if keep:
            return "problem", f"{name!r} is entirely empty: it cannot be a feature"
        return "left out", "empty in every row"
    if pd.api.types.is_bool_dtype(values):
        return _boolean_or_constant(name, present, values, keep)
    if pd.api.types.is_datetime64_any_dtype(values):
        return _date_spec(name, values), None
    if pd.api.types.is_numeric_dtype(values):
        return _numeric_spec(name, values, present, keep)
    if not is_text(values):
        return "problem", f"{name!r} holds {values.dtype} values, which dlref cannot use"
    text = present.astype(str)
    numbers = pd.to_numeric(text, errors="coerce")
    if numbers.notna().all():
        return _numeric_spec(name, pd.to_numeric(values.astype(object), errors="coerce"),
                             numbers, keep)
    if numbers.notna().mean() >= 0.9:
        stray = text[numbers.isna()]
        if stray.str.lower().isin(MISSING_WORDS).all():
            return _numeric_spec(name, to_numbers(values), numbers.dropna(), keep)
        return "problem", (f"{name!r} is numeric except for values like {stray.iloc[0]!r} in "
                           f"{plural(len(stray), 'row')} (a decimal comma? a text marker for "
                           "missing?)")
    lowered = set(text.str.lower().unique())
    if lowered <= TRUE_WORDS | FALSE_WORDS:
        return _boolean_or_constant(name, present, values, keep)
    if looks_like_dates(text):
        dayfirst = is_dayfirst(text)
        parsed = to_dates(values, dayfirst)
        if parsed.notna().sum() >= 0.9 * len(present):
            return _date_spec(name, parsed, dayfirst), None
    return _category_spec(name, values, text, keep)


def _numeric_spec(name, values, present, keep):
    if present.nunique() <= 1 and len(present) == len(values) and not keep:
        return "left out", f"constant, {plain(present.iloc[0])} in every row"
    if not keep and _is_row_number(values):
        return "left out", "row numbers, an identifier"
    if not keep and _is_numbered_id(name, present):
        share = 100 * present.nunique() / len(present)
        return "left out", f"an identifier by its name, whole numbers {share:.0f}% distinct"
    kind = "boolean" if set(np.unique(present)) <= {0, 1} else "numeric"
    return {"name": name, "kind": kind}, None


# A column named as an identifier: id, ID, tweet_id, customer id, CustomerID, userId (not
# PAID, valid, Lipid).
_ID_NAME = re.compile(r"(^|[_\s.-])(?i:id)$|[a-z]I[dD]$")


def _is_numbered_id(name, present):
    """Whole numbers, nearly all distinct, in a column named as an identifier (tweet_id,
    CustomerID): numbers that name rows, not quantities."""
    return (len(present) >= ID_MIN_ROWS and bool(_ID_NAME.search(name.strip()))
            and bool((present % 1 == 0).all()) and present.nunique() >= 0.95 * len(present))


def _is_row_number(values):
    """1, 2, 3, ... (or 0, 1, 2, ...) by line of the file; the frame keeps the file's row
    positions as its index, so rows dropped earlier (no target) do not hide it."""
    if len(values) < ID_MIN_ROWS or values.isna().any():
        return False
    numbers = values.to_numpy(dtype="float64")
    if not pd.api.types.is_integer_dtype(values.index):
        return False
    position = np.asarray(values.index, dtype="float64")
    return any(np.array_equal(numbers, position + start) for start in (0, 1))


def _boolean_or_constant(name, present, values, keep):
    if present.astype(str).nunique() <= 1 and len(present) == len(values) and not keep:
        return "left out", f"constant, {plain(present.iloc[0])} in every row"
    return {"name": name, "kind": "boolean"}, None


def _date_spec(name, dates, dayfirst=False):
    dates = _naive(dates)
    parts = [part for part in DATE_PARTS if _part(dates, part).nunique() > 1]
    return {"name": name, "kind": "date", "parts": parts, "dayfirst": dayfirst,
            "origin": dates.min().isoformat()}


def looks_like_dates(text):
    """Whether nearly every value (strings) is written as a date or a timestamp."""
    return bool(text.str.match(_DATE_LIKE).mean() >= 0.9)


def is_dayfirst(text):
    """Whether dates like 03/04/2024 are day first: decided on the training file (a first
    number above 12 somewhere), and saved, so new rows are read the same way."""
    parts = text.str.extract(r"^(\d{1,2})[/.-](\d{1,2})[/.-]\d{2,4}").dropna().astype(int)
    return bool(len(parts)) and bool((parts[0] > 12).any()) and not bool((parts[1] > 12).any())


def _category_spec(name, values, text, keep):
    distinct = text.nunique()
    if distinct <= 1 and len(text) == len(values) and not keep:
        return "left out", f"constant, {text.iloc[0]!r} in every row"
    if not keep and len(text) >= ID_MIN_ROWS and distinct >= 0.95 * len(text):
        share = 100 * distinct / len(text)
        return "left out", f"identifier or free text, {share:.0f}% of values distinct"
    return {"name": name, "kind": "category"}, None


# --- Typing: raw cells -> numbers and labels -----------------------------------------------


def to_numbers(values):
    """Numbers, with missing-value words and unparseable text as NaN."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype("float64")
    return pd.to_numeric(values.astype(object), errors="coerce").astype("float64")


def to_booleans(values):
    if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
        return values.astype("float64")
    lowered = values.astype(object).map(lambda v: str(v).strip().lower() if pd.notna(v) else v)
    return lowered.map(lambda v: 1.0 if v in TRUE_WORDS else 0.0 if v in FALSE_WORDS else np.nan)


def to_dates(values, dayfirst=False):
    """Timestamps (timezone-aware ones in UTC, without the zone); unparseable cells are NaT."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return _naive(values)
    text = values.astype(object)
    with warnings.catch_warnings():  # pandas' notes on format inference are not for users.
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(text, errors="coerce", utc=True, dayfirst=dayfirst)
        if parsed.notna().sum() < 0.9 * text.notna().sum():
            parsed = pd.to_datetime(text, errors="coerce", utc=True, format="mixed",
                                    dayfirst=dayfirst)
    return _naive(parsed)


def _naive(dates):
    dates = pd.to_datetime(dates, errors="coerce")
    if getattr(dates.dt, "tz", None) is not None:
        dates = dates.dt.tz_convert("UTC").dt.tz_localize(None)
    return dates


def _part(dates, part):
    return getattr(dates.dt, part) if part != "hour" else dates.dt.hour + dates.dt.minute / 60


def derived_names(spec):
    """The model-side columns a schema column becomes (a date: one per part, then days)."""
    if spec["kind"] != "date":
        return [spec["name"]]
    return [f"{spec['name']}_{part}" for part in [*spec["parts"], "days"]]


def typed(frame, schema):
    """The schema's columns as numbers (numeric, boolean, date parts) or labels (category)."""
    columns = {}
    for spec in schema:
        values = frame[spec["name"]]
        if spec["kind"] == "numeric":
            numbers = to_numbers(values)
            code = spec.get("missing_code")
            columns[spec["name"]] = numbers if code is None else numbers.mask(numbers == code)
        elif spec["kind"] == "boolean":
            columns[spec["name"]] = to_booleans(values)
        elif spec["kind"] == "date":
            dates = to_dates(values, spec.get("dayfirst", False))
            parts = [_part(dates, part) for part in spec["parts"]]
            parts.append((dates - pd.Timestamp(spec["origin"])).dt.total_seconds() / 86400)
            for name, part in zip(derived_names(spec), parts, strict=True):
                columns[name] = part.astype("float64")
        else:
            columns[spec["name"]] = values.astype(object).map(label)
    out = pd.DataFrame(columns, index=frame.index)
    out.attrs = dict(frame.attrs)  # Where its rows are in the file, for messages.
    return out


def label(value):
    """A category cell as text; 3.0 (a file whose gaps made pandas read floats) is '3'."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return np.nan
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def gaps(table, schema):
    """Per schema column, a boolean Series of the rows where its typed value is missing."""
    return {spec["name"]: table[derived_names(spec)].isna().any(axis=1) for spec in schema}


# --- 2. The encoding, fitted on the training split -----------------------------------------


def fit_encoding(table, schema, missing="impute", max_categories=50):
    """[{"name", "column", "kind": numeric|categorical, ...}] for `encode`, fitted on typed
    training rows; "column" is the schema column each input comes from."""
    encoding = []
    for spec in schema:
        for name in derived_names(spec):
            values = table[name]
            has_gaps = bool(values.isna().any()) and missing == "impute"
            if spec["kind"] == "category":
                counts = values.dropna().value_counts()
                kept = sorted(counts.index[:max_categories]) if len(counts) else []
                encoding.append({"name": name, "column": spec["name"], "kind": "categorical",
                                 "categories": kept, "other": len(counts) > max_categories,
                                 "missing": has_gaps})
                continue
            fill = float(values.median()) if values.notna().any() else 0.0
            numbers = values.fillna(fill).to_numpy(dtype="float64")
            std = float(numbers.std())
            encoding.append({"name": name, "column": spec["name"], "kind": "numeric",
                             "fill": fill, "indicator": has_gaps, "mean": float(numbers.mean()),
                             "std": std if std > 0 else 1.0})
    return encoding


def encode(table, encoding):
    """The model's input matrix; returns (x, unseen) with unseen = {column: (count, example)} of
    category values never seen in training (counted as "(other)" where training had rare values
    left out, else as no category: all zeros)."""
    blocks, unseen = [], {}
    for column in encoding:
        values = table[column["name"]]
        if column["kind"] == "numeric":
            numbers = values.to_numpy(dtype="float64")
            gap = np.isnan(numbers)
            filled = np.where(gap, column.get("fill", column["mean"]), numbers)
            blocks.append(((filled - column["mean"]) / column["std"])[:, None])
            if column.get("indicator"):
                blocks.append(gap[:, None].astype("float64"))
            continue
        labels = values.to_numpy(dtype=object)
        categories = np.array(column["categories"], dtype=object)
        block = labels[:, None] == categories[None, :]
        gap = pd.isna(labels)
        new = ~gap & ~block.any(axis=1)
        if new.any():
            unseen[column["name"]] = (int(new.sum()), labels[new][0])
        if column.get("other"):
            block = np.hstack([block, new[:, None]])
        if column.get("missing"):
            block = np.hstack([block, gap[:, None]])
        blocks.append(block)
    if not blocks:
        return np.zeros((len(table), 0), dtype="float32"), unseen
    return np.hstack(blocks).astype("float32"), unseen


def feature_names(encoding):
    names = []
    for column in encoding:
        if column["kind"] == "numeric":
            names.append(column["name"])
            names.extend([f"{column['name']}_missing"] if column.get("indicator") else [])
        else:
            names.extend(f"{column['name']}={c}" for c in column["categories"])
            names.extend([f"{column['name']}=(other)"] if column.get("other") else [])
            names.extend([f"{column['name']}=(missing)"] if column.get("missing") else [])
    return names


def plain(value):
    """A cell as people write it: 7.25, not np.float64(7.25)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return repr(value) if isinstance(value, str) else str(value)

