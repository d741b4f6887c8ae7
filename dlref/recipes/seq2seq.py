"""Character-level sequence-to-sequence translation, English -> French (chapter 11).

The book's encoder-decoder: an LSTM(256) encoder reads the source characters and its final
states (h, c) start an LSTM(256) decoder, which a softmax over the target characters follows.
Training uses teacher forcing: the decoder reads the target shifted right behind a start symbol
and learns the next character; padding is masked out of the loss and the accuracy. To translate,
an encoder model and a one-step decoder model are rebuilt from the trained layers (found by
name) and the decoder is fed its own most likely character until it says "end" (greedy). The
inputs are one-hot characters as in the book (a frozen identity Embedding, which also masks the
padding), or a learned embedding with --set embedding_size=N. Sample translations of a few
validation sentences are printed after each epoch and written to TensorBoard (logs/samples).

Data: `--data pairs.tsv` (source<TAB>target per line, e.g. an anki export), `--dataset fra` (the
book's English -> French sentences, downloaded once), or built in: the numbers below 1,000 in
English -> French words (num2words), e.g. "nine hundred and ninety-one" -> "neuf cent
quatre-vingt-onze". Measured with the defaults (seed 42): on 100 held-out numbers, exact match
0.94 and character error rate 0.018, against 0.00 / 0.76 for the trivial baseline; 100 epochs,
5.8 minutes on 2 CPU cores (about 235 pairs/s).
"""

import dataclasses

import keras
import numpy as np
from keras import layers

from dlref.data import Dataset
from dlref.data import pairs as pairslib
from dlref.errors import DlrefError
from dlref.recipes import common
from dlref.text import plural

NAME = "seq2seq"
CHAPTER = 11
SUMMARY = "Character-level LSTM encoder-decoder translation (built-in: numbers EN -> FR)"
MONITOR = "val_loss"
MODE = "min"
# Keras backend unless --backend or KERAS_BACKEND says otherwise (README, "Keras backends"):
# JAX trains the two LSTM(256) 2.1x faster here (1.96 s against 4.08 s an epoch on the
# built-in pairs), and its first epoch, compile included, costs what TensorFlow's does.
BACKEND = "jax"
BASELINES = "trivial = the training split's most frequent target, for every source"

# --- Config ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    units: int = 256  # the book's latent_dim: width of the encoder and decoder LSTMs
    embedding_size: int = 0  # 0 = one-hot characters, as in the book; N = a learned embedding
    optimizer: str = "adam"  # the book's rmsprop (at 0.001) learnt the numbers more slowly
    learning_rate: float = 0.002  # the optimizer's step size
    batch_size: int = 32  # the book's 64: ~110 epochs to 0.9 exact match here, 32: ~70
    epochs: int = 100  # the book's; early stopping on val_loss may end sooner
    early_stopping_patience: int = 10  # epochs without val_loss improvement (0 = off)
    num_samples: int = 10000  # the book's: the first N pairs of the data (0 = all)
    max_length: int = 80  # pairs with a longer source or target (characters) are left out
    val_fraction: float = 0.1  # share of pairs for validation (checkpoint choice)
    test_fraction: float = 0.1  # share of pairs held out for the final test metrics
    sample_translations: int = 4  # validation pairs translated and logged each epoch (0 = none)
    seed: int = 42  # seeds the split, the weights and the shuffling


def check_config(config):
    """Rejects settings no network could train with, naming the key and the valid range."""
    if config.units < 1 or config.embedding_size < 0:
        raise DlrefError("units must be at least 1 and embedding_size at least 0 (0 = one-hot).")
    if config.max_length < 1 or config.num_samples < 0 or config.sample_translations < 0:
        raise DlrefError("max_length must be at least 1; num_samples and sample_translations "
                         "at least 0.")
    common.check_fractions(config)
    common.check_training(config)


# --- Data ------------------------------------------------------------------------------------


def load_data(config, source):
    check_config(config)
    found = pairslib.read(source, config.max_length, config.num_samples)
    return pairslib.prepare(found, config.val_fraction, config.test_fraction, config.seed)


# --- Model -----------------------------------------------------------------------------------


def _characters(vocabulary, embedding_size, name):
    """One-hot (a frozen identity matrix) or a learned embedding; id 0 (padding) is masked."""
    size = len(vocabulary) + pairslib.RESERVED
    if embedding_size == 0:
        return layers.Embedding(size, size, embeddings_initializer="identity", trainable=False,
                                mask_zero=True, name=name)
    return layers.Embedding(size, embedding_size, mask_zero=True, name=name)


def build_model(config, data):
    meta = data.meta
    source = keras.Input(shape=(None,), dtype="int32", name="source")
    decoder_input = keras.Input(shape=(None,), dtype="int32", name="decoder_input")
    x = _characters(meta["source_characters"], config.embedding_size, "source_embedding")(source)
    _, state_h, state_c = layers.LSTM(config.units, return_state=True, name="encoder")(x)
    y = _characters(meta["target_characters"], config.embedding_size,
                    "target_embedding")(decoder_input)
    # return_state too, so that the one-step decoder rebuilt for translation gets its states.
    y, _, _ = layers.LSTM(config.units, return_sequences=True, return_state=True,
                          name="decoder")(y, initial_state=[state_h, state_c])
    outputs = layers.Dense(len(meta["target_characters"]) + pairslib.RESERVED,
                           activation="softmax", name="next_character")(y)
    model = keras.Model([source, decoder_input], outputs, name="seq2seq")
    # The mask of the padding reaches the loss and the metric through the outputs.
    model.compile(optimizer=common.make_optimizer(config), loss="sparse_categorical_crossentropy",
                  metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    return model


# --- Translation: greedy decoding with models rebuilt from the trained layers ----------------


def translator(model):
    """(encoder, one-step decoder) sharing the trained layers of `model`, found by name."""
    source = keras.Input(shape=(None,), dtype="int32", name="source")
    x = model.get_layer("source_embedding")(source)
    _, state_h, state_c = model.get_layer("encoder")(x)
    encoder = keras.Model(source, [state_h, state_c], name="encoder_model")
    units = model.get_layer("encoder").units
    previous = keras.Input(shape=(1,), dtype="int32", name="previous_character")
    h_in = keras.Input(shape=(units,), name="state_h")
    c_in = keras.Input(shape=(units,), name="state_c")
    y = model.get_layer("target_embedding")(previous)
    y, h_out, c_out = model.get_layer("decoder")(y, initial_state=[h_in, c_in])
    probabilities = model.get_layer("next_character")(y)
    decoder = keras.Model([previous, h_in, c_in], [probabilities, h_out, c_out],
                          name="decoder_step")
    return encoder, decoder


def translate(models, sources, meta, batch_size=256):
    """Greedy translations of `sources` (texts) by (encoder, decoder) from `translator`."""
    ids = pairslib.encode(sources, meta["source_characters"])
    steps = meta["max_target_length"] + 1
    found = []
    for start in range(0, len(ids), batch_size):
        found.extend(_greedy(*models, ids[start:start + batch_size], steps))
    return [pairslib.decode(row, meta["target_characters"]) for row in found]


def _greedy(encoder, decoder, source_ids, steps):
    state_h, state_c = encoder.predict_on_batch(source_ids)
    previous = np.full((len(source_ids), 1), pairslib.START, dtype="int32")
    out = np.full((len(source_ids), steps), pairslib.END, dtype="int32")
    for step in range(steps):
        probabilities, state_h, state_c = decoder.predict_on_batch([previous, state_h, state_c])
        # Never padding, start or unknown: the decoder learnt to say none of them.
        scores = np.array(probabilities[:, -1])
        scores[:, [pairslib.PAD, pairslib.START, pairslib.UNKNOWN]] = -1
        out[:, step] = scores.argmax(axis=-1)
        if np.all(np.any(out[:, :step + 1] == pairslib.END, axis=1)):
            break
        previous = out[:, step:step + 1]
    return out


class SampleTranslations(keras.callbacks.Callback):
    """After each epoch, prints a few validation sources, their references and the model's
    greedy translations, and writes them as TensorBoard text (log_dir None: printed only).

    Args:
        sources, references: the pairs to translate.
        meta: the data's vocabularies and lengths.
        log_dir: the TensorBoard folder for the text (e.g. RUN/logs/samples).
    """

    def __init__(self, sources, references, meta, log_dir=None):
        super().__init__()
        self.sources, self.references, self.meta = list(sources), list(references), meta
        self.log_dir = log_dir

    def on_train_begin(self, logs=None):
        import tensorflow as tf

        self.models = translator(self.model)
        self.writer = tf.summary.create_file_writer(self.log_dir) if self.log_dir else None

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        outputs = translate(self.models, self.sources, self.meta)
        rows = list(zip(self.sources, self.references, outputs, strict=True))
        for source, reference, output in rows:
            mark = "=" if output == reference else "x"
            print(f"  {mark} {source!r} -> {output!r}  (reference {reference!r})", flush=True)
        if self.writer is not None:
            table = "| source | reference | model |\n|---|---|---|\n" + "\n".join(
                f"| {s} | {r} | {o} |" for s, r, o in rows)
            with self.writer.as_default():
                tf.summary.text("samples", table, step=epoch)
            self.writer.flush()

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.close()


def callbacks(config, data, run_dir):
    """Sample translations each epoch: in a training run only (none while tuning)."""
    if run_dir is None or config.sample_translations == 0:
        return []
    sources, references = data.extra["texts"]["val"]
    count = config.sample_translations
    return [SampleTranslations(sources[:count], references[:count], data.meta,
                               str(run_dir / "logs" / "samples"))]


# --- Search space ----------------------------------------------------------------------------


def search_space(hp, config):
    return dataclasses.replace(
        config,
        units=hp.Choice("units", sorted({64, 128, 256, 512, config.units}), default=config.units),
        embedding_size=hp.Choice("embedding_size", sorted({0, 16, 32, 64, config.embedding_size}),
                                 default=config.embedding_size),
        learning_rate=hp.Float("learning_rate", 1e-4, 1e-2, sampling="log",
                               default=config.learning_rate),
        batch_size=hp.Choice("batch_size", sorted({32, 64, 128, config.batch_size}),
                             default=config.batch_size))


# --- Evaluation ------------------------------------------------------------------------------


def edit_distance(a, b):
    """Levenshtein distance: the fewest insertions, deletions and substitutions from a to b."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        current = [i]
        for j, y in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def translation_scores(references, outputs):
    """Exact match (share of whole translations right) and character error rate (edits over
    all reference characters)."""
    edits = sum(edit_distance(o, r) for o, r in zip(outputs, references, strict=True))
    return {"exact_match": float(np.mean([o == r for o, r in zip(outputs, references,
                                                                    strict=True)])),
            "char_error_rate": edits / max(1, sum(map(len, references)))}


def evaluate(model, data):
    sources, references = data.extra["texts"]["test"]
    outputs = translate(translator(model), sources, data.meta)
    table = {}
    for predictor, found in (("model", outputs),
                             ("trivial", [data.meta["trivial"]] * len(references))):
        for metric, value in translation_scores(references, found).items():
            table.setdefault(metric, {})[predictor] = value
    rows = list(zip(sources, references, outputs, strict=True))
    wrong = [row for row in rows if row[1] != row[2]]
    shown = rows[:3] + [row for row in wrong if row not in rows[:3]][:3]
    lines = [f"  {'=' if o == r else 'x'} {s!r} -> {o!r}" + ("" if o == r else f"  (reference "
                                                             f"{r!r})") for s, r, o in shown]
    report = (f"Greedy translations of {len(rows):,} test sources; {len(wrong):,} differ from "
              "the reference. Examples:\n" + "\n".join(lines))
    return {"metrics": table, "report": report}


def loss_label(meta):
    return "cross-entropy per target character (padding masked)"


# --- New data: evaluate --data and predict -----------------------------------------------------


def _say(lines):
    import sys

    for line in lines:
        print(line, file=sys.stderr)


def load_labelled(path, meta):
    """A pair file as a test set, encoded with the run's vocabularies (for evaluate --data)."""
    found = pairslib.read_tsv(path)
    if not found.sources:
        raise DlrefError(f"{path} holds no pairs to evaluate on.")
    _say(found.notes[1:] + pairslib.unseen_notice(found.sources, meta))
    x, y = pairslib.encode_pairs(found.sources, found.targets, meta)
    empty = (tuple(part[:0] for part in x), y[:0])
    return Dataset(train=empty, val=empty, test=(x, y), meta=dict(meta),
                   extra={"texts": {"test": (found.sources, found.targets)}})


def predict(model, meta, path, text=None):
    """Translations of --text inputs, or of a file with one input per line (a pair file's
    first column)."""
    import pandas as pd

    if text is not None:
        inputs = [str(t) for t in text]
    else:
        inputs, notes = pairslib.read_lines(path)
        _say(notes)
    _say(pairslib.unseen_notice(inputs, meta))
    longest = meta["max_source_length"]
    longer = sum(len(t) > longest for t in inputs)
    if longer:
        _say([f"{plural(longer, 'input')} {'is' if longer == 1 else 'are'} longer than any "
              f"training source ({longest} characters): expect "
              f"{'its translation' if longer == 1 else 'their translations'} to be cut short "
              "or wrong."])
    return pd.DataFrame({"source": inputs, "translation": translate(translator(model), inputs,
                                                                    meta)})
