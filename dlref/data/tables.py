"""Reading a table as people export it: CSV (any common delimiter, encoding, decimal comma,
compressed), Parquet or a spreadsheet (.xlsx, .xls, .ods: its largest table), with a
header row whose names may carry stray spaces, lines of a title above it, a second header row,
or no header at all (columns then named column_1, column_2, ...).

`read_table(path)` returns (frame, notes): the notes say what was guessed (an encoding other
than UTF-8, a decimal comma), so a user can tell how the file was read.
"""

import bz2
import contextlib
import csv
import gzip
import io
import lzma
import re
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from dlref.errors import DlrefError
from dlref.text import ENCODING_NAMES, encoding_of, listing, plural

# frame.attrs key: the file line of the first data row (2 when the header is line 1).
FIRST_ROW_LINE = "first_row_line"
HEADERLESS = "headerless"  # frame.attrs key: its columns are named column_1, column_2, ...
DROPPED_ROWS = "dropped_rows"  # frame.attrs key: positions of data rows dropped while reading.
# frame.attrs key: {name in the upper of two header rows: the column's name} (two_header_rows).
UPPER_NAMES = "upper_names"
MISSING_CODES = "missing_codes"  # frame.attrs key: {column: its number for "no value"}.
SHEET = "sheet"  # frame.attrs key: which sheet of a workbook was read ('' for one sheet).
PARQUET_SUFFIXES = {".parquet", ".pq"}
EXCEL_SUFFIXES = {".xlsx", ".xlsm", ".xls", ".ods"}
# What a spreadsheet file starts with: a zip (.xlsx, .xlsm, .ods) or an OLE2 compound file (.xls).
SPREADSHEET_MAGIC = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0")
COMPRESSED_SUFFIXES = {".gz", ".bz2", ".zip", ".xz"}
# Files that are tables, but not ones dlref reads: say what to save them as.
OTHER_FORMATS = {".json", ".jsonl", ".xml", ".html", ".htm",
                 ".feather", ".arrow", ".h5", ".hdf5", ".pkl", ".pickle", ".npy", ".npz",
                 ".sav", ".dta", ".sas7bdat", ".db", ".sqlite", ".orc", ".avro"}
# Cells that mean "no value" in real exports, besides pandas' own (empty, NA, N/A, NaN, null...).
MISSING_MARKERS = ["?", "-", "--"]
# Words that stand for "no value" in a column that is otherwise numbers.
MISSING_WORDS = {"na", "n/a", "nan", "null", "none", "missing", "unknown", "?", "-", "--", ".",
                 "n.a.", "#n/a", "nil", "empty",
                 # Statistics offices': the World Bank's "..", Eurostat's ":", the ONS's "[x]",
                 # "not determined".
                 "..", ":", "[x]", "[c]", "[z]", "n.d.", "nd", "n/d",
                 # Excel's error values, as a sheet saved as CSV writes them.
                 "#div/0!", "#value!", "#ref!", "#name?", "#num!", "#null!", "#n/a n/a"}
# 1,5 and 1.234,5 (a decimal comma, with or without thousands dots).
_DECIMAL_COMMA = re.compile(r"^-?(\d+|\d{1,3}(\.\d{3})+),\d+$")
# $1,234.50 / 12% / 1,234: a currency sign, a percent sign, thousands commas.
_NUMBER_DECORATION = re.compile(r"(?<=^-)[$€£]\s?|^[$€£]\s?|\s?%$|(?<=\d),(?=\d{3}(\D|$))")


def read_table(path):
    """Reads a CSV, Parquet or spreadsheet file with a header row; returns (frame, notes)."""
    path = Path(path)
    if path.is_dir():
        raise DlrefError(f"{path} is a folder; --data expects a CSV, Parquet or spreadsheet "
                         "file.")
    if not path.is_file():
        raise DlrefError(f"Data file not found: {path}")
    with open(path, "rb") as handle:
        head = handle.read(512)
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if head[:4] == b"PAR1" or (suffixes and suffixes[-1] in PARQUET_SUFFIXES):
        frame, notes = _read_parquet(path), []
    elif suffixes and suffixes[-1] in EXCEL_SUFFIXES and head.startswith(SPREADSHEET_MAGIC):
        frame, notes = _read_excel(path)
    elif suffixes and suffixes[-1] in EXCEL_SUFFIXES:
        frame, notes = _read_text_spreadsheet(path, head)
    else:
        _check_csv_like(path, head, suffixes)
        frame, notes = _read_csv(path)
    frame = _tidy(frame, path)
    return frame, notes + _missing_codes(frame)


def _read_text_spreadsheet(path, head):
    """A file named as a spreadsheet that is text: web apps export tab- or comma-separated
    text, or an HTML table, under .xls. Text is read as a CSV, with a note; HTML is refused."""
    text = head.decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n").lower()
    if text.startswith(("<!doctype", "<html", "<table", "<?xml", "<meta", "<head")):
        raise DlrefError(f"{path} is a web page (HTML or XML) named {path.suffix}, not a "
                         "spreadsheet: open it in a spreadsheet program and save it as .xlsx "
                         "or CSV.")
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DlrefError(f"Could not read {path} as a spreadsheet: it is neither a workbook nor "
                         "text. Save it again as .xlsx or CSV.")
    frame, notes = _read_csv(path)
    return frame, [f"{path.name} is a text table, not a workbook (as web apps export them "
                   f"under {path.suffix}): read it as CSV."] + notes


def _check_csv_like(path, head, suffixes):
    plain = [s for s in suffixes if s not in COMPRESSED_SUFFIXES][-1:] or [""]
    compressed = bool(suffixes) and suffixes[-1] in COMPRESSED_SUFFIXES
    if head.startswith(SPREADSHEET_MAGIC) and not compressed:
        raise DlrefError(f"{path} is a zip archive or a spreadsheet, not a CSV. Name a workbook "
                         ".xlsx (.xls for Excel 97-2003, .ods for OpenDocument), or save the "
                         "sheet as CSV (File > Save as > CSV UTF-8) or as Parquet.")
    if plain[0] in OTHER_FORMATS:
        raise DlrefError(f"{path}: dlref reads CSV files (.csv, .tsv, .txt, also .gz / .zip "
                         f"compressed), Parquet (.parquet) and spreadsheets (.xlsx, .xls, "
                         f".ods), not {plain[0]} files. Save the table as CSV, Parquet or "
                         ".xlsx.")


def _read_parquet(path):
    try:
        return pd.read_parquet(path)
    except ImportError as error:
        raise DlrefError(f"Reading Parquet needs pyarrow: {error}") from None
    except Exception as error:  # pyarrow raises its own types for a damaged file.
        raise DlrefError(f"Could not read {path} as Parquet ({type(error).__name__}: "
                         f"{error}).") from None


def _read_excel(path):
    """The first sheet of a workbook, through the CSV reader, so that a title above the header,
    a missing header row and numbers typed as text are handled as in a CSV. Cells keep what
    Excel stores: numbers, dates (as ISO text, read back as dates), text."""
    try:
        sheets = pd.read_excel(path, sheet_name=None, header=None, dtype=object)
    except ImportError as error:
        raise DlrefError(f"Reading {path.suffix} spreadsheets needs a package that is not "
                         f"installed: {error}") from None
    except Exception as error:  # openpyxl, xlrd and odfpy raise their own types.
        raise DlrefError(f"Could not read {path} as a spreadsheet ({type(error).__name__}: "
                         f"{error}).") from None
    # Empty columns go (a table that starts in column B); rows stay, so that a message's line
    # numbers are the sheet's row numbers.
    filled = {name: sheet.dropna(axis=1, how="all") for name, sheet in sheets.items()
              if sheet.notna().any().any()}
    if not filled:
        raise DlrefError(f"{path}: every sheet is empty.")
    # The sheet with the most filled cells, of two columns or more: not a "Read me" or "Notes"
    # sheet, nor the "Contents" sheet of a statistics office's workbook, before the data.
    tables = [name for name, sheet in filled.items() if sheet.shape[1] >= 2] or list(filled)
    name = max(tables, key=lambda name: int(filled[name].notna().sum().sum()))
    sheet = filled[name]
    notes = [] if len(sheets) == 1 else [
        f"Read the sheet {name!r} of {path.name}, the largest table ({len(sheets)} sheets: "
        f"{listing(sheets, 6)}); save another sheet as CSV to use it."]
    text = sheet.to_csv(index=False, header=False, date_format="%Y-%m-%d %H:%M:%S")
    frame, more = _read_csv(path, io.BytesIO(text.encode("utf-8")))
    # A column that held only the title above the table is empty and unnamed below it.
    title = [name for name in frame.columns
             if str(name).startswith("Unnamed: ") and frame[name].isna().all()]
    frame = frame.drop(columns=title)
    frame.attrs[SHEET] = notes[0] if notes else ""
    return frame, notes + more


def _read_csv(path, handle=None):
    """(frame, notes) of a CSV file, or of the CSV text in `handle` (an Excel sheet)."""
    raw = _sample_bytes(path) if handle is None else handle.getvalue()
    if not raw.strip():
        raise DlrefError(f"{path} is empty: expected a header row and data rows.")
    encoding, notes = _encoding(path, raw) if handle is None else ("utf-8", [])
    sample = raw.decode(encoding, errors="replace")
    if "\x00" in sample:
        raise DlrefError(f"{path} is not a text file (it holds NUL bytes). Save the data as "
                         "CSV or Parquet.")
    try:
        delimiter = "," if handle is not None else csv.Sniffer().sniff(
            sample[:65536], delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = ","
    lines = [line for line in sample.splitlines()[:200] if line.strip()]
    tabs = Counter(line.count("\t") for line in lines)
    if delimiter != "\t" and len(lines) >= 3 and len(tabs) == 1 and min(tabs) >= 1:
        delimiter = "\t"  # As many tabs on every line: texts hold commas, hardly tabs.
    if handle is None and _separated_by_spaces(sample, delimiter):
        with _binary(path) as binary:
            text = binary.read().decode(encoding, errors="replace")
        frame, more = _read_csv(path, io.BytesIO(_spaces_to_commas(text).encode("utf-8")))
        return frame, notes + [f"{path.name} separates its columns with spaces (as UCI's "
                               "auto-mpg.data and housing.data do): read as such."] + more
    skip, above = _preamble(sample, delimiter)
    if skip:
        sample = "\n".join(sample.splitlines()[skip:])
        notes.append(f"Skipped {plural(skip, 'line')} above the header row of {path.name} (line "
                     f"{skip + 1}): {listing([repr(text) for text in above], 3)}.")
    values = _values_in_first_row(sample, delimiter)
    if not values:
        _check_header(path, sample, delimiter)
    options = {"sep": delimiter, "skipinitialspace": True, "na_values": MISSING_MARKERS,
               "low_memory": False, "header": None if values else "infer"}

    def parse(**more):
        if handle is not None:
            handle.seek(0)
        if not skip:
            return pd.read_csv(path if handle is None else handle, encoding=encoding, **options,
                               **more)
        # From the header line on: pandas' skiprows would count a quoted line break.
        with contextlib.nullcontext(handle) if handle is not None else _binary(path) as binary:
            text = io.TextIOWrapper(binary, encoding=encoding, newline="")
            for _ in range(skip):
                text.readline()
            return pd.read_csv(text, **options, **more)

    try:
        try:
            frame = parse()
        except pd.errors.ParserError as error:
            frame, more = _without_lines_at_the_end(path, handle, encoding, skip, error, parse)
            notes += more
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as error:
        raise DlrefError(f"Could not parse {path} as CSV: {str(error).strip()}") from None
    if values:
        frame.columns = [f"column_{i}" for i in range(1, frame.shape[1] + 1)]
        notes.append(f"No header row in {path.name}: its first line holds values ({values}), "
                     f"so its columns are named column_1 to column_{frame.shape[1]} (--target "
                     "column_N).")
    else:
        frame, more = _two_header_rows(frame, path)
        notes += more
        skip += bool(more)  # The second header row is a line above the data too.
    notes += _drop_rows(frame, header=not values)
    frame, more = _without_notes_below(frame)
    notes += more
    frame, more = _without_total_rows(frame)
    notes += more
    frame.attrs[FIRST_ROW_LINE] = skip + (1 if values else 2)
    frame.attrs[HEADERLESS] = bool(values)
    notes += _gap_words(frame)
    notes += _decimal_commas(frame, quoted=delimiter == ",")
    notes += _decorated_numbers(frame)
    return frame, notes


def _without_notes_below(frame, last=8):
    """(frame, notes): the frame without lines of text below the table, each in one cell of
    a row otherwise empty: sentences of 3 words or more, twice as long as that column's values
    (a source, a footnote, the title again: "International airline passengers: monthly totals
    in thousands" below the data of that name), and the "Footnotes" heading or rule above
    them (as the ONS writes them)."""
    if frame.shape[1] < 2 or len(frame) <= last:
        return frame, []
    filled = frame.notna().sum(axis=1).to_numpy()
    first = len(frame)
    while first > len(frame) - last and filled[first - 1] == 1:
        row = frame.iloc[first - 1]
        name, cell = row.dropna().index[0], row.dropna().iloc[0]
        usual = frame[name].iloc[:len(frame) - last].dropna().astype(str).str.len().median()
        if not isinstance(cell, str) or not (
                (len(cell.split()) >= 3 and len(cell) >= 2 * usual)
                or not any(c.isalnum() for c in cell)  # A rule: ====
                or cell.strip(" :").casefold() in NOTE_HEADINGS):
            break
        first -= 1
    if first == len(frame) or not any(
            len(str(frame.iloc[row].dropna().iloc[0]).split()) >= 3
            for row in range(first, len(frame))):
        return frame, []
    shown = _quoted([str(frame.iloc[row].dropna().iloc[0]) for row in range(first, len(frame))])
    return frame.iloc[:first], [
        f"Left out {plural(len(frame) - first, 'line')} of text below the table: {shown}."]


NOTE_HEADINGS = {"footnotes", "footnote", "notes", "note", "sources", "source"}


def _without_lines_at_the_end(path, handle, encoding, skip, error, parse, last=10):
    """(frame, notes) when the lines that do not fit the table (pandas' `error`: "Expected 2
    fields in line 3652, saw 3") are all among the `last` lines of the file: a footer with
    commas ("Daily minimum temperatures in Melbourne, Australia, 1981-1990"), read without
    them. Otherwise the error is raised again."""
    found = re.search(r"in line (\d+)", str(error))
    if not found:
        raise error
    with contextlib.nullcontext(io.BytesIO(handle.getvalue())) if handle is not None \
            else _binary(path) as binary:
        lines = io.TextIOWrapper(binary, encoding=encoding, errors="replace").read().splitlines()
    first_bad = int(found.group(1)) + skip  # pandas counts from the line it started on.
    if len(lines) - first_bad >= last:
        raise error
    frame = parse(on_bad_lines="skip")
    shown = _quoted([line.strip() for line in lines[first_bad - 1:] if line.strip()])
    return frame, [f"Left out the last lines of {path.name} that do not fit the table (from "
                   f"line {first_bad}): {shown}."]


def _quoted(texts, width=60):
    """"'Source: ...', 'Note ...' and 2 more": lines of text a note names, each cut to
    `width` characters."""
    return listing([repr(text if len(text) <= width else text[:width - 3] + "...")
                    for text in texts], 2)


# A spreadsheet's summary rows below a table name themselves in the first text column.
TOTAL_WORDS = ("total", "grand total", "totals", "sum", "summe", "gesamt", "average", "mean")


def _without_total_rows(frame, last=3):
    """(frame, notes): the frame without rows at its end named "Total", "Sum", "Average"...
    in its first text column (once in that column, and only at the end): a spreadsheet's sums
    below the table would be an outlier row of data."""
    text = [name for name in frame.columns if is_text(frame[name])]
    if not text or len(frame) <= last:
        return frame, []
    labels = frame[text[0]].astype(str).str.strip().str.casefold()
    total = labels.isin(TOTAL_WORDS).to_numpy()
    if not total[-last:].any() or total[:-last].any():
        return frame, []
    first = len(frame) - last + int(np.flatnonzero(total[-last:])[0])
    shown = listing([repr(str(v)) for v in frame[text[0]].iloc[first:]], 3)
    return frame.iloc[:first], [
        f"Left out {plural(len(frame) - first, 'row')} at the end named as a summary in "
        f"{text[0]!r} ({shown}): sums or means of the rows above, not data."]


def _two_header_rows(frame, path, rows=200):
    """(frame, notes): a first data row of names over columns of numbers is a second header
    row, as some spreadsheets have: codes over names (UCI's credit-default workbook: X1 ... Y
    above LIMIT_BAL ... 'default payment next month'), names over units, group names over
    their parts (2019, , 2020 above Q1, Q2, Q1, Q2). The columns are named from the two rows:
    the lower row's names where they are all there and differ; names over short units as
    'name (unit)'; group over part as 'group part'. attrs[UPPER_NAMES] keeps the upper row's
    names, so that a --target from it can be pointed to its column."""
    if len(frame) < 3:
        return frame, []
    lower = {name: str(value).strip() for name, value in frame.iloc[0].items()
             if isinstance(value, str) and value.strip()}
    filled = frame.iloc[0].notna() & (frame.iloc[0].astype(str).str.strip() != "")
    from dlref.data.columns import looks_like_dates

    # Names have letters and are no dates: a first row of "2020-01-01, [x]", "Mar 1, 2020,
    # n.d." or "W001, <0.5" is data with a marker in it.
    if not lower or len(lower) < filled.sum() or any(
            is_number(value) or value.casefold() in MISSING_WORDS
            or not any(c.isalpha() for c in value) or looks_like_dates(pd.Series([value]))
            for value in lower.values()):
        return frame, []
    below = frame.iloc[1:rows + 1]
    numeric = sum(pd.to_numeric(below[name].dropna(), errors="coerce").notna().mean() >= 0.9
                  for name in lower if below[name].notna().any())
    if numeric * 2 < len(lower) or numeric < 1:
        return frame, []
    upper = ["" if str(name).startswith("Unnamed: ") else str(name).strip()
             for name in frame.columns]
    names = _names_of_two_rows(upper, [lower.get(name, "") for name in frame.columns])
    if names is None:
        return frame, []
    frame = frame.iloc[1:].reset_index(drop=True)
    _numbers_again(frame)
    frame.columns = names
    frame.attrs[UPPER_NAMES] = {above: name for above, name in zip(upper, names, strict=True)
                                if above and above != name}
    shown = listing([repr(name) for name in names], 4)
    return frame, [f"{path.name} has two header rows: its columns are named from both "
                   f"({shown})."]


def _names_of_two_rows(upper, lower):
    """Column names from two header rows (see _two_header_rows), or None when none of the
    ways gives every column its own name."""
    def unique(names):
        return all(names) and len(set(names)) == len(names)

    if unique(upper) and all(len(unit) <= 8 for unit in lower):  # Names over units.
        return [f"{name} ({unit})" if unit else name
                for name, unit in zip(upper, lower, strict=True)]
    if unique(lower):
        return lower
    groups, group = [], ""
    for name in upper:  # A merged cell over its parts: its name, then empty cells.
        group = name or group
        groups.append(group)
    joined = [" ".join(part for part in (above, below) if part)
              for above, below in zip(groups, lower, strict=True)]
    return joined if unique(joined) else None


def named_above(frame, name):
    """' 'Y' is the upper header row's name of column 'default ...'.', or '' (_two_header_rows)."""
    column = frame.attrs.get(UPPER_NAMES, {}).get(str(name).strip())
    return (f" {name!r} is the upper header row's name of the column {column!r}: use that "
            "name." if column else "")


def sheet_read(frame):
    """' Read the sheet ... of book.xlsx ...' for a workbook of several sheets, else ''."""
    return f" {frame.attrs[SHEET]}" if frame.attrs.get(SHEET) else ""


def _drop_rows(frame, header=True):
    """Drops, in place, rows with no value at all (a sheet's empty rows below its table, lines
    of delimiters only: ";;;;") and, when the file has a `header`, rows that repeat it (files
    joined with `cat`, exports in pages); returns a note for each kind there was. Their
    positions go to attrs[DROPPED_ROWS], so that messages still name file lines."""
    blank = frame.isna().all(axis=1)
    again = pd.Series(header, index=frame.index)
    for name in frame.columns if header else []:  # An unnamed column's header cell was empty.
        cells = frame[name]
        again &= (cells.isna() if str(name).startswith("Unnamed: ")
                  else cells.astype(str).str.strip() == str(name).strip())
    again &= ~blank
    dropped = (blank | again).to_numpy()
    if not dropped.any() or dropped.all():
        return []
    frame.attrs[DROPPED_ROWS] = [int(i) for i in np.flatnonzero(dropped)]
    frame.drop(index=frame.index[dropped], inplace=True)
    notes = []
    if blank.any():
        notes.append(f"Dropped {plural(int(blank.sum()), 'row')} without any value.")
    if again.any():
        _numbers_again(frame)
        notes.append(f"Dropped {plural(int(again.sum()), 'row')} repeating the header row "
                     "(files joined one after another, or an export in pages).")
    return notes


def _numbers_again(frame):
    """Text columns that hold only numbers become numbers, in place: rows of names, now
    dropped, made pandas read them as text."""
    for name in frame.columns:
        numbers = pd.to_numeric(frame[name], errors="coerce")
        if is_text(frame[name]) and numbers.notna().sum() == frame[name].notna().sum():
            frame[name] = numbers


# A field of a table whose columns are separated by runs of spaces or tabs: a quoted text
# ("chevrolet chevelle malibu") or a word.
_SPACED_FIELD = re.compile(r'"([^"]*)"|(\S+)')


def _spaced_fields(line):
    return [quoted or word for quoted, word in _SPACED_FIELD.findall(line)]


def _separated_by_spaces(sample, delimiter, lines=200):
    """Whether the columns are separated by runs of spaces (UCI's housing.data, auto-mpg.data,
    fixed-width exports): the sniffed `delimiter` gives at most 2 fields a line, spaces give
    the same number of 3 or more on 9 lines in 10, and most of those fields are numbers (not
    the words of a column of texts)."""
    rows = [line for line in sample.splitlines()[:lines] if line.strip()]
    if len(rows) < 3:
        return False
    by_delimiter = Counter(len(next(csv.reader([row], delimiter=delimiter))) for row in rows)
    fields = [_spaced_fields(row) for row in rows]
    width, count = Counter(map(len, fields)).most_common(1)[0]
    below = [field for row in fields[1:] for field in row]  # The first may be a header.
    # The first line as wide as the rest: Kaggle's FER2013 CSV ("emotion,pixels" over rows of
    # a label and 2,304 numbers in one cell) is comma-separated.
    return (by_delimiter.most_common(1)[0][0] <= 2 and width >= 3 and len(fields[0]) == width
            and count >= 0.9 * len(rows) and 2 * sum(map(is_number, below)) > len(below))


def _spaces_to_commas(text):
    """The table `text`, its columns separated by runs of spaces, as comma-separated text."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for line in text.splitlines():
        writer.writerow(_spaced_fields(line))
    return out.getvalue()


def _preamble(sample, delimiter, lines=60):
    """(lines to skip, their text) when the header row is not the first line: a report's title
    and date above the table ("Sales report,,," then a blank line), as spreadsheets and
    statistics offices export them. The header is the first line with the table's usual number
    of fields, at least half of them filled; a first line like that means no preamble."""
    head = sample.splitlines()[:lines]
    rows = [next(csv.reader([line], delimiter=delimiter), []) for line in head]
    # The table's width: the most common among the later rows, where the data is (a long
    # preamble of "Key:,value" lines would win over the first rows).
    several = [row for row in rows if len(row) > 1]
    widths = Counter(len(row) for row in several[len(several) // 2:])
    if len(rows) < 3 or not widths:
        return 0, []
    usual = widths.most_common(1)[0][0]

    def header_like(row):  # A trailing delimiter may end the header only ("Year,Value,").
        width = len(row) - (len(row) == usual + 1 and not row[-1].strip())
        return width == usual and sum(bool(cell.strip()) for cell in row) * 2 >= usual

    if header_like(rows[0]):
        return 0, []
    for index, row in enumerate(rows[1:-1], start=1):
        filled = [[cell.strip() for cell in r if cell.strip()] for r in rows[:index]]
        if any(len(cells) > 2 for cells in filled):
            return 0, []  # Not a title and a date: more like rows of a table.
        below = next((r for r in rows[index + 1:] if any(c.strip() for c in r)), [])
        if (header_like(row) and len(below) == usual
                and not all(is_number(cell) for cell in row if cell.strip())):
            return index, [" ".join(cells) for cells in filled if cells]
    return 0, []


def _values_in_first_row(sample, delimiter, lines=200):
    """Why the first row is data, not a header ('' when it looks like a header): every cell a
    number, mostly numbers with decimals (UCI's auto-mpg.data ends each row with a car's
    name), or a word that recurs below it in its column ('ham' in a file of ham/spam labels,
    'Iris-setosa' in UCI's iris.data)."""
    rows = list(csv.reader(sample.splitlines()[:lines], delimiter=delimiter))
    if len(rows) < 3 or len(rows[0]) < 2:
        return ""
    first = [cell.strip() for cell in rows[0]]
    if all(cell and is_number(cell) for cell in first):
        return "only numbers: " + ", ".join(first[:4]) + (", ..." if len(first) > 4 else "")
    # Names may be years (2019, 2020), hardly 18.0 or 3504.: decimals, most cells numbers.
    decimals = [cell for cell in first if is_number(cell) and "." in cell]
    if len(decimals) >= 2 and 2 * sum(map(is_number, first)) > len(first):
        return "numbers with decimals: " + ", ".join(decimals[:4]) + (
            ", ..." if len(decimals) > 4 else "")
    repeated = [[cell.strip() for cell in row] == first for row in rows[1:]]
    for index, cell in enumerate(first):
        if cell and not is_number(cell):
            column = [row[index].strip() for row in rows[1:] if len(row) > index]
            elsewhere = sum(value == cell and not again
                            for value, again in zip(column, repeated, strict=False))
            if column.count(cell) >= 2 and elsewhere:  # Not only a header repeated whole.
                return (f"{cell[:40]!r} recurs below it in column {index + 1}, "
                        f"{plural(column.count(cell), 'time')} in the next {len(column)} rows")
    return ""


@contextlib.contextmanager
def _binary(path):
    """The file's bytes as an open binary handle, decompressed (.gz, .bz2, .xz, or a one-file
    .zip)."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if not n.endswith("/")]
                if len(names) != 1:
                    raise DlrefError(f"{path} holds {plural(len(names), 'file')}; dlref reads a "
                                     "zip with exactly one CSV in it.")
                with archive.open(names[0]) as handle:
                    yield handle
                return
        opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(suffix, open)
        with opener(path, "rb") as handle:
            yield handle
    except (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError) as error:
        raise DlrefError(f"Could not read {path} ({type(error).__name__}: {error}).") from None


def _sample_bytes(path, size=1 << 20):
    """The first MiB of the file's text, decompressed."""
    with _binary(path) as handle:
        return handle.read(size)


def _encoding(path, raw):
    """(codec, notes) of a CSV from its first MiB (`dlref.text.encoding_of`); UTF-8 only when
    the whole file is (checked line by line, unless compressed)."""
    codec = encoding_of(raw, partial=True)
    if codec == "utf-8" and path.suffix.lower() not in COMPRESSED_SUFFIXES:
        try:
            with open(path, encoding="utf-8", newline="") as handle:
                for _ in handle:
                    pass
        except UnicodeDecodeError:  # A stray byte after the first MiB.
            codec = "cp1252" if _decodes(raw, "cp1252") else "latin-1"
    if codec in (None, "utf-8", "utf-8-sig"):
        return codec or "utf-8", []  # None: the NUL check that follows says so.
    if codec.startswith("utf-16"):
        bom = "" if codec == "utf-16" else " (little endian, no byte-order mark)"
        return codec, [f"Read {path.name} as UTF-16{bom}."]
    return codec, [f"{path.name} is not UTF-8: read it as {ENCODING_NAMES[codec]}."]


def _decodes(raw, codec):
    try:
        raw.decode(codec)
        return True
    except UnicodeDecodeError:
        return False


def _check_header(path, sample, delimiter):
    """Refuses duplicate column names, which pandas would rename, and a file of a header only."""
    lines = sample.splitlines()
    first = next(csv.reader(lines[:1], delimiter=delimiter), [])
    names = [name.strip() for name in first]
    seen = {}
    for index, name in enumerate(names, start=1):
        if name:
            seen.setdefault(name, []).append(index)
    twice = {name: places for name, places in seen.items() if len(places) > 1}
    if twice:
        listed = "; ".join(f"{name!r} (columns {', '.join(map(str, places))})"
                           for name, places in twice.items())
        raise DlrefError(f"{path}: column names appear more than once: {listed}. Rename them "
                         "so that each column has its own name.")
    if len(lines) < 2:
        raise DlrefError(f"{path} has a header but no data rows.")


def _convert_text_columns(frame, convert):
    """Replaces each text column for which `convert(stripped non-empty cells)` returns numbers;
    returns the names of the columns it replaced."""
    converted = []
    for name in frame.columns:
        values = frame[name]
        if not is_text(values):
            continue
        present = values.dropna().astype(str).str.strip()
        numbers = convert(present) if len(present) else None
        if numbers is not None:
            frame[name] = numbers.reindex(values.index)
            converted.append(str(name))
    return converted


def _gap_words(frame):
    """Text columns of numbers and words for no value (the World Bank's "..", "n/a") become
    numbers with gaps, however many the words are."""

    def convert(present):
        words = present.str.lower().isin(MISSING_WORDS)
        numbers = pd.to_numeric(present.mask(words), errors="coerce")
        return numbers if words.any() and (~words).any() and numbers[~words].notna().all() \
            else None

    converted = _convert_text_columns(frame, convert)
    if not converted:
        return []
    return [f"Read words for no value as gaps in {plural(len(converted), 'column')} of "
            f"numbers: {listing(converted)}."]


def _decimal_commas(frame, quoted=False):
    """Text columns that are numbers written with a decimal comma (1,5) become numbers.

    quoted: the file's delimiter is a comma, so such cells were quoted ("51,26"). There "1,234"
    may be a thousand written with a separator; a column counts as decimal commas only when a
    value says so: not 3 digits after the comma, or a thousands dot before it (1.234,5)."""

    def convert(present):
        words = present.str.lower().isin(MISSING_WORDS)  # #DIV/0!, n/a: gaps, not a vote.
        comma = present.str.match(_DECIMAL_COMMA)
        if not (comma.any() and (comma | present.str.match(r"^-?\d+$"))[~words].mean() >= 0.9):
            return None
        if quoted and not (present[comma].str.contains(r"\.") | (
                present[comma].str.split(",").str[-1].str.len() != 3)).any():
            return None
        plain = present.str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
        return pd.to_numeric(plain.mask(words), errors="coerce")

    converted = _convert_text_columns(frame, convert)
    if not converted:
        return []
    return [f"Read decimal commas as decimal points in {plural(len(converted), 'column')}: "
            f"{listing(converted)}."]


def _decorated_numbers(frame):
    """Text columns of numbers written for people ($1,234.50, 12%, 1,234) become numbers."""

    def convert(present):
        if pd.to_numeric(present, errors="coerce").notna().mean() >= 0.9:
            return None  # Plain numbers with a few stray cells: the column kinds decide.
        plain = present.str.replace(_NUMBER_DECORATION, "", regex=True)
        # Accounts write negative amounts in parentheses: (12.50) is -12.50.
        plain = plain.str.replace(r"^\((.*)\)$", r"-\1", regex=True)
        numbers = pd.to_numeric(plain, errors="coerce")
        ok = (numbers.notna() | present.str.lower().isin(MISSING_WORDS)).all()
        return numbers if ok and numbers.notna().any() else None  # Not "unknown" throughout.

    converted = _convert_text_columns(frame, convert)
    if not converted:
        return []
    return [f"Read {plural(len(converted), 'column')} of numbers written with $, % or thousands "
            f"separators as numbers: {listing(converted)}."]


def _missing_codes(frame):
    """Numbers that code "no value" become gaps, in place: -200 in UCI's air quality file,
    -999, -9999. A code is the least value of a numeric column, in 2 rows or more, negative and
    written as -99, -999, ... or as a multiple of 100, where the column's other values are
    none of them negative (sensor readings, counts) or lie further from it than twice their
    own spread (-200 below temperatures of -2 to 45). Positive codes (9999) are left alone: a
    price of 999 or a top-coded 99999 is a value. The codes go to attrs[MISSING_CODES] (a
    run's schema keeps them for new rows). Returns a note naming them."""
    found = []
    for name in frame.columns:
        values = frame[name]
        if values.dtype.kind not in "if":
            continue
        present = values.dropna()
        if len(present) < 20:
            continue
        code = present.min()
        rest = present[present != code]
        if rest.nunique() < 2 or (present == code).sum() < 2 or not _code_like(code):
            continue
        if rest.min() >= 0 or rest.min() - code > 2 * (rest.max() - rest.min()):
            count = int((values == code).sum())
            frame[name] = values.mask(values == code)
            frame.attrs.setdefault(MISSING_CODES, {})[name] = float(code)
            found.append(f"{name!r} {code:g} ({plural(count, 'row')})")
    if not found:
        return []
    return [f"Read {listing(found, 6)} as missing: codes for \"no value\", below the "
            "column's other values."]


def _code_like(value):
    """Whether a number is written as codes for "no value" are: -99, -999, ..., -200."""
    if value % 1 or value > -99:
        return False
    digits = str(abs(int(value)))
    return set(digits) == {"9"} or value % 100 == 0


def _tidy(frame, path):
    """Strips spaces from names and text cells; empty text cells count as missing. A named
    index (a Parquet file written from an indexed frame) becomes a column again, and rows are
    numbered by their position in the file."""
    if not isinstance(frame.index, pd.RangeIndex) or frame.index.name is not None:
        frame = frame.reset_index() if any(frame.index.names) else frame
    frame = frame.reset_index(drop=True)
    frame.columns = [str(name).strip() for name in frame.columns]
    if frame.columns.duplicated().any():
        names = sorted(set(frame.columns[frame.columns.duplicated()]))
        raise DlrefError(f"{path}: column names appear more than once: {', '.join(names)}. "
                         "Rename them so that each column has its own name.")
    if frame.empty:
        raise DlrefError(f"{path} has a header but no data rows.")
    for name in frame.columns:
        if is_text(frame[name]):
            stripped = frame[name].map(lambda v: v.strip() if isinstance(v, str) else v)
            frame[name] = stripped.mask(stripped == "")
    return frame


def file_lines(rows, values):
    """'5, 9, 12, ...': the file lines of positions `rows` of a frame (or column) read here,
    counting the lines read_table skipped or dropped."""
    first = values.attrs.get(FIRST_ROW_LINE, 2)
    dropped = values.attrs.get(DROPPED_ROWS, [])

    def line(row):
        for position in dropped:  # Sorted: each dropped row above moves the row down one.
            row += position <= row
        return row + first

    return ", ".join(str(line(r)) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")


def is_text(values):
    """Whether a column holds text (object or pandas' string dtype), not numbers or dates."""
    return values.dtype == object or pd.api.types.is_string_dtype(values)


def is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False
