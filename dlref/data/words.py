"""Words to ids for the text recipe: Keras' TextVectorization with a vocabulary fitted on the
training texts (and saved with the run as JSON), the number of words read per text, and
pretrained word vectors from a GloVe-format file."""

from pathlib import Path

import numpy as np

from dlref.errors import DlrefError

MAX_LENGTH = 400  # An automatic sequence length stops here: longer is slow for an LSTM on a CPU.


def vectorizer(sequence_length, vocabulary_size=None, vocabulary=None):
    """Keras' TextVectorization: lower case, punctuation stripped, split on spaces; ids of the
    first `sequence_length` words, 0 after the end (1 is a word outside the vocabulary)."""
    from keras import layers

    return layers.TextVectorization(max_tokens=vocabulary_size, vocabulary=vocabulary,
                                    output_sequence_length=sequence_length)


def to_ids(layer, texts, length, batch=4096):
    """int32 word ids, shape (texts, length), in batches to bound memory."""
    from keras import ops

    texts = list(texts)
    parts = [ops.convert_to_numpy(layer(np.array(texts[i:i + batch], dtype=object)))
             for i in range(0, len(texts), batch)]
    return np.concatenate(parts).astype("int32") if parts else np.zeros((0, length), "int32")


def choose_length(texts, configured):
    """The configured sequence length, or the 90th percentile of the training texts' word
    counts (from 8 to MAX_LENGTH words)."""
    if configured:
        return int(configured)
    words = texts.str.split().str.len()
    return int(np.clip(np.percentile(words, 90), 8, MAX_LENGTH))


def read_vectors(path, vocabulary, seed):
    """A GloVe-format file (a word and its numbers on each line; word2vec's "N D" header line
    skipped) as an embedding matrix for `vocabulary`: (matrix, words covered). Words it lacks
    keep small random vectors, the padding id zeros."""
    path = Path(path)
    if not path.is_file():
        raise DlrefError(f"--embeddings: no file at {path}.")
    index = {word: i for i, word in enumerate(vocabulary)}
    rows, dim = {}, None
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            parts = line.rstrip().split(" ")
            if number == 1 and len(parts) == 2 and all(p.isdigit() for p in parts):
                continue
            if len(parts) < 2:
                continue
            dim = dim or len(parts) - 1
            if len(parts) - 1 != dim:
                raise DlrefError(f"--embeddings {path}, line {number}: {len(parts) - 1} numbers "
                                 f"after the word, where line 1 has {dim}. Is it a GloVe-format "
                                 "text file (a word, then its numbers, separated by spaces)?")
            if parts[0] in index and parts[0] not in rows:
                try:
                    rows[parts[0]] = np.asarray(parts[1:], dtype="float32")
                except ValueError:
                    raise DlrefError(f"--embeddings {path}, line {number}: not numbers after "
                                     f"the word {parts[0]!r}.") from None
    if dim is None:
        raise DlrefError(f"--embeddings {path} holds no word vectors.")
    scale = float(np.std(np.stack(list(rows.values())))) if rows else 0.1
    matrix = np.random.default_rng(seed).normal(0, scale, (len(vocabulary), dim)).astype("float32")
    matrix[0] = 0.0
    for word, vector in rows.items():
        matrix[index[word]] = vector
    return matrix, len(rows)


def ids_for(texts, meta):
    """Word ids of new (cleaned) texts with the run's vocabulary and sequence length."""
    layer = vectorizer(meta["sequence_length"], vocabulary=meta["vocabulary"])
    return to_ids(layer, texts, meta["sequence_length"])
