"""Sentence pairs for the seq2seq recipe (chapter 11): read, cleaned, split, and as character ids.

A pair file is what anki exports (the book's fra.txt): `source<TAB>target` per line; further
columns are ignored (current exports add a third, the Tatoeba attribution, which broke the
book's script). Blank lines are skipped; a BOM and Windows line ends are handled; a file that
is not UTF-8 is read as Latin-1, with a notice; pairs with an empty side are dropped and pairs
longer than `max_length` characters left out, with counts. A line without a tab is refused with
its line number. The named dataset `fra` is the book's English -> French file, downloaded once
through Keras' cache; the built-in default is numbers written in English -> in French, from
num2words (a real translation task with its own irregularities: "soixante et onze",
"quatre-vingts"), generated offline.

Character vocabularies come from the training split only. Ids: 0 pads, 1 starts a target, 2
ends it, 3 stands for a character never seen in training, then the characters in sorted order.
"""

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from dlref.data import Dataset
from dlref.errors import DlrefError
from dlref.text import decoded, listing, plural, shown_path

PAD, START, END, UNKNOWN = 0, 1, 2, 3
RESERVED = 4  # Ids below this are the four symbols above.
MIN_PAIRS = 10  # Fewer cannot be split into train, validation and test.
# The built-in numbers: drawn from 0 to BUILTIN_RANGE - 1 with a fixed seed, so every run and
# every resume sees the same pairs. Below 10,000 (sequences half again as long, ten times the
# pairs) an epoch took 37 s here and 15 epochs were still far from 0.9 exact match.
BUILTIN_RANGE = 1_000
BUILTIN_SEED = 11
FRA_URL = "http://storage.googleapis.com/download.tensorflow.org/data/fra-eng.zip"


@dataclasses.dataclass
class Pairs:
    """Source and target texts in file order, where they came from, and what reading did."""

    sources: list
    targets: list
    where: str
    notes: list = dataclasses.field(default_factory=list)


# --- Reading -------------------------------------------------------------------------------------


def read(source, max_length, num_samples):
    """The pairs of `source` (--data TSV, --dataset fra, or the built-in numbers), cleaned.

    Args:
        max_length: pairs with a longer source or target (in characters) are left out.
        num_samples: keep the first N pairs (the book's num_samples); 0 keeps all.
    """
    source.refuse_options("seq2seq", "date_column", "text_column", "embeddings")
    given = [flag for flag, value in (
        ("--target", source.target), ("--positive-class", source.positive_class),
        ("--val-data", source.val_data), ("--test-data", source.test_data),
        ("--missing", source.missing), ("--drop", source.drop), ("--features", source.features),
        ("--max-categories", source.max_categories)) if value]
    if given:
        raise DlrefError(f"{', '.join(given)} go with tables, not with sentence pairs: a pair "
                         "file holds source<TAB>target per line, split by --set val_fraction / "
                         "test_fraction.")
    if source.data:
        found = read_tsv(source.data)
    elif source.dataset:
        found = named(source.dataset)
    else:
        found = builtin(num_samples or BUILTIN_RANGE)
    return _shorten(found, max_length, num_samples)


def read_tsv(path):
    """The pairs of a tab-separated file (first column source, second target)."""
    path = Path(path)
    if path.is_dir() or not path.is_file():
        raise DlrefError(f"No pair file at {path} (expected a text file of source<TAB>target "
                         "lines).")
    text, notes = _decode(path.read_bytes(), path)
    return _parse(text.split("\n"), shown_path(path), notes)


def _decode(raw, path):
    """(text, notes): UTF-8, UTF-16 or Windows-1252 / Latin-1 (dlref.text.decoded), saying
    which when it is not UTF-8; a binary file is refused."""
    text, encoding = decoded(raw)
    if encoding is None:
        raise DlrefError(f"{path} is not a text file (it holds NUL bytes): expected "
                         "source<TAB>target lines.")
    return text, [] if encoding == "UTF-8" else [f"{path.name} is not UTF-8: read it as "
                                                  f"{encoding}."]


def read_lines(path):
    """(inputs, notes) of a file with one input per line, for predict: blank lines skipped,
    and of a pair file's line only the source (before the first tab)."""
    path = Path(path)
    if path.is_dir() or not path.is_file():
        raise DlrefError(f"No input file at {path} (expected one text to translate per line).")
    text, notes = _decode(path.read_bytes(), path)
    lines = [line.rstrip("\r") for line in text.split("\n") if line.strip()]
    if lines and _is_header(lines[0].split("\t")):
        shown = " / ".join(_tidy(cell) for cell in lines[0].split("\t")[:2])
        notes = notes + [f"Skipped the first line, a header ({shown})."]
        lines = lines[1:]
    inputs = [_tidy(line.split("\t")[0]) for line in lines]
    inputs = [line for line in inputs if line]
    if not inputs:
        raise DlrefError(f"{path} has no text to translate (one input per line).")
    return inputs, notes


def _tidy(cell):
    """A cell without surrounding spaces, French typography's no-break spaces (before "!", in
    "5 000") as plain ones: a user types plain spaces, and the log shows them as such."""
    return cell.translate(_NO_BREAK).strip()


_NO_BREAK = str.maketrans({"\u00a0": " ", "\u202f": " ", "\u2009": " "})


# Words a header line of a pair file is made of ("English<TAB>French", "source<TAB>target").
HEADER_WORDS = {
    "source", "target", "src", "tgt", "input", "output", "question", "answer", "text",
    "sentence", "translation", "original", "english", "french", "german", "spanish", "italian",
    "portuguese", "dutch", "russian", "chinese", "japanese", "korean", "arabic", "turkish",
    "polish", "swedish", "hindi", "en", "fr", "de", "es", "it", "pt", "nl", "ru", "zh", "ja",
    "ko", "ar", "tr", "pl", "sv", "hi"}


def _is_header(cells):
    """Whether a line's tab-separated `cells` are a header: two or more, the first two header
    words (English<TAB>French)."""
    return len(cells) >= 2 and all(_tidy(cell).casefold() in HEADER_WORDS for cell in cells[:2])


def _parse(lines, where, notes):
    sources, targets, untabbed, empty, extra = [], [], [], 0, 0
    header = None
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        cells = line.split("\t")
        if header is None:  # The first line with text: a header line, or the first pair.
            header = _is_header(cells)
            if header:
                notes = notes + [f"Skipped line {number}, a header ("
                                 f"{' / '.join(_tidy(c) for c in cells[:2])}), not a pair."]
                continue
        if len(cells) < 2:
            untabbed.append(number)
            continue
        extra += len(cells) > 2
        source, target = _tidy(cells[0]), _tidy(cells[1])
        if not source or not target:
            empty += 1
            continue
        sources.append(source)
        targets.append(target)
    if untabbed:
        lines = "line" if len(untabbed) == 1 else "lines"
        raise DlrefError(f"{where}: no tab on {lines} {listing(untabbed, 5)}: each line needs "
                         "source<TAB>target (a tab between the text and its translation).")
    # A pair twice would be in training and in the test split: kept once, in file order.
    kept = list(dict.fromkeys(zip(sources, targets, strict=True)))
    repeated = len(sources) - len(kept)
    sources, targets = [s for s, _ in kept], [t for _, t in kept]
    notes = [f"Data: {where}, {plural(len(sources), 'pair')}"] + notes
    if repeated:
        notes.append(f"Dropped {plural(repeated, 'repeated pair')} (the same text and "
                     "translation as a line before): a copy could be trained on and tested on.")
    if extra:
        notes.append(f"Columns after the second ignored on {plural(extra, 'line')} (an anki "
                     "export's attribution).")
    if empty:
        notes.append(f"Dropped {plural(empty, 'pair')} with an empty source or target.")
    return Pairs(sources, targets, where, notes)


def _shorten(found, max_length, num_samples):
    """Leaves out pairs over `max_length` characters, then keeps the first `num_samples`."""
    if max_length < 1:
        raise DlrefError(f"max_length must be at least 1, got {max_length}.")
    keep = [i for i, (s, t) in enumerate(zip(found.sources, found.targets, strict=True))
            if len(s) <= max_length and len(t) <= max_length]
    left_out = len(found.sources) - len(keep)
    if left_out:
        found.notes.append(f"Left out {plural(left_out, 'pair')} longer than {max_length} "
                           f"characters (--set max_length=N keeps longer ones).")
    if num_samples and len(keep) > num_samples:
        found.notes.append(f"Kept the first {num_samples:,} of {len(keep):,} pairs "
                           "(--set num_samples=N; 0 keeps all).")
        keep = keep[:num_samples]
    found.sources = [found.sources[i] for i in keep]
    found.targets = [found.targets[i] for i in keep]
    if len(keep) < MIN_PAIRS:
        raise DlrefError(f"{found.where}: {plural(len(keep), 'usable pair')}, too few to split "
                         f"into training, validation and test (at least {MIN_PAIRS}).")
    return found


def builtin(count):
    """`count` numbers written in English and in French (num2words), drawn without repeats."""
    from num2words import num2words

    rng = np.random.default_rng(BUILTIN_SEED)
    numbers = rng.permutation(BUILTIN_RANGE)[:count]
    return Pairs([num2words(int(n)) for n in numbers],
                 [num2words(int(n), lang="fr") for n in numbers],
                 "num2words English -> French numbers (built-in)",
                 [f"Data: numbers below {BUILTIN_RANGE:,} in English -> French words "
                  f"(num2words, built-in), {plural(len(numbers), 'pair')}"])


def named(name):
    """The book's anki English -> French pairs, downloaded once into Keras' cache."""
    if name != "fra":
        raise DlrefError(f"Unknown pair dataset {name!r}. Known: fra (the book's English -> "
                         "French sentences, downloaded once); drop --dataset for the built-in "
                         "numbers.")
    import keras

    try:
        folder = Path(keras.utils.get_file("fra-eng.zip", FRA_URL, extract=True))
    except Exception as error:  # Offline: urllib, socket and HTTP errors all land here.
        raise DlrefError(f"Could not download the fra-eng pairs ({type(error).__name__}: "
                         f"{error}). Without network access, train on the built-in numbers "
                         "instead: drop --dataset (built-in: num2words English -> French)."
                         ) from None
    files = sorted(folder.rglob("fra.txt")) if folder.is_dir() else [folder]
    if not files:
        raise DlrefError(f"The fra-eng download in {folder} holds no fra.txt; remove that "
                         "folder from Keras' cache and try again.")
    found = read_tsv(files[0])
    found.where = "fra"
    return found


# --- Splitting and encoding ----------------------------------------------------------------------


def prepare(found, val_fraction, test_fraction, seed):
    """Shuffled train / validation / test splits as character ids, with the vocabularies in
    meta. data.extra["texts"][split] holds each split's (sources, targets) as text."""
    order = np.random.default_rng(seed).permutation(len(found.sources))
    n_test = max(1, round(len(order) * test_fraction))
    n_val = max(1, round(len(order) * val_fraction))
    if len(order) - n_test - n_val < 1:
        raise DlrefError("val_fraction and test_fraction leave no pairs to train on.")
    splits = {"test": order[:n_test], "val": order[n_test:n_test + n_val],
              "train": order[n_test + n_val:]}
    texts = {split: ([found.sources[i] for i in rows], [found.targets[i] for i in rows])
             for split, rows in splits.items()}
    sources, targets = texts["train"]
    meta = {"task": "translation", "source": found.where,
            "source_characters": sorted(set("".join(sources))),
            "target_characters": sorted(set("".join(targets))),
            "max_source_length": max(map(len, sources)),
            "max_target_length": max(map(len, targets)),
            "trivial": _most_frequent(targets)}
    arrays = {split: encode_pairs(*texts[split], meta) for split in texts}
    notes = found.notes + [
        f"Split: {len(splits['train']):,} pairs to train, {len(splits['val']):,} to validate, "
        f"{len(splits['test']):,} to test; {len(meta['source_characters'])} source and "
        f"{len(meta['target_characters'])} target characters; longest "
        f"{meta['max_source_length']} -> {meta['max_target_length']}."]
    for split, name in (("val", "validation source"), ("test", "test source")):
        notes += unseen_notice(texts[split][0], meta, name)
    return Dataset(train=arrays["train"], val=arrays["val"], test=arrays["test"], meta=meta,
                   fingerprint=_fingerprint(texts), notes=notes, extra={"texts": texts})


def _most_frequent(targets):
    counts = {}
    for target in targets:
        counts[target] = counts.get(target, 0) + 1
    return max(counts, key=counts.get)  # The first of the most frequent, in split order.


def encode(texts, characters, length=None, start=False, end=False):
    """Texts as a (rows, length) int32 array of ids padded with 0; unseen characters -> 3."""
    ids = {character: RESERVED + i for i, character in enumerate(characters)}
    rows = [[START] * start + [ids.get(c, UNKNOWN) for c in text] + [END] * end
            for text in texts]
    length = length or max(map(len, rows), default=1)
    array = np.zeros((len(rows), length), dtype="int32")
    for i, row in enumerate(rows):
        array[i, :min(len(row), length)] = row[:length]
    return array


def encode_pairs(sources, targets, meta):
    """((source ids, decoder input ids), target ids): the target shifted right behind a start
    symbol is the decoder's input (teacher forcing); the target followed by the end symbol is
    what it learns to say."""
    length = max(map(len, targets), default=0) + 1
    decoder_input = encode(targets, meta["target_characters"], length, start=True)
    target = encode(targets, meta["target_characters"], length, end=True)
    return (encode(sources, meta["source_characters"]), decoder_input), target


def unseen_characters(texts, characters):
    return sorted(set("".join(texts)) - set(characters))


def unseen_notice(sources, meta, name="input"):
    """[a line naming the source characters never seen in training], or []."""
    unseen = unseen_characters(sources, meta["source_characters"])
    if not unseen:
        return []
    return [f"Read as unknown: {plural(len(unseen), 'character')} of the {name}s never seen "
            f"in training ({listing(map(repr, unseen), 8)})."]


def decode(ids, characters):
    """The text of a row of target ids, up to the end symbol."""
    out = []
    for i in ids:
        if i == END:
            break
        if i >= RESERVED:
            out.append(characters[i - RESERVED])
    return "".join(out)


def _fingerprint(texts):
    payload = json.dumps({split: pair for split, pair in sorted(texts.items())},
                         ensure_ascii=False)
    return hashlib.sha256(f"pairs v1 {payload}".encode()).hexdigest()[:16]
