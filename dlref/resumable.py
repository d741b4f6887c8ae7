"""What lets an interrupted run continue as if it had never stopped.

A resume restores the newest readable backup (weights and optimizer state, written atomically
with the previous epoch's kept as a fallback), drops history rows the backup does not cover,
replays the early-stopping count from history.csv, and draws each epoch's random numbers (data
order, dropout masks) from (seed, epoch) alone. Together they make a run resumed from an epoch
boundary repeat the uninterrupted run on CPU.
"""

import contextlib
import csv
import io as stdio
import math
import sys
import time
from pathlib import Path

import keras
import numpy as np

from dlref import io


def epoch_seed(seed, epoch):
    """A 31-bit seed that depends on (seed, epoch) alone, so epoch 8 of a resumed run draws the
    same random numbers as epoch 8 of an uninterrupted one."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0] >> 1)


class EpochSeeds(keras.callbacks.Callback):
    """Re-seeds the random generators at the start of each epoch from (seed, epoch).

    Python's and NumPy's global generators, Keras' global seed, and the state of each Keras
    SeedGenerator in the model (dropout masks, augmentation). Without it a resumed run replays
    the random numbers of epoch 1 at its first resumed epoch, and dropout diverges from the
    uninterrupted run at once.

    Not TensorFlow's global seed (training seeds it once): `tf.random.set_seed` clears
    TensorFlow's kernel cache, so every tf.function (the train and test steps) is set up again
    at its next call. Calling `keras.utils.set_random_seed` every epoch cost 0.5 s an epoch on
    the timeseries recipe here (0.6-0.7 s against 0.15-0.18 s). No Keras layer draws from that
    seed: Keras 3 draws from SeedGenerators, and dlref's data order is drawn from (seed, epoch)
    statelessly.
    """

    def __init__(self, seed):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        import random

        from keras.src.backend.common import global_state
        from keras.src.random import seed_generator
        from keras.src.utils.rng_utils import GLOBAL_RANDOM_SEED

        seed = epoch_seed(self.seed, epoch)
        random.seed(seed)
        np.random.seed(seed)
        # What keras.utils.set_random_seed does besides TensorFlow's seed: keras.random calls
        # without a seed draw from a global SeedGenerator made again from this seed.
        global_state.set_global_attribute(GLOBAL_RANDOM_SEED, seed)
        global_state.set_global_attribute(seed_generator.GLOBAL_SEED_GENERATOR, None)
        states = [v for v in self.model.variables if v.name == "seed_generator_state"]
        for index, state in enumerate(states):
            value = epoch_seed(epoch_seed(self.seed, epoch), index + 1)
            state.assign(np.array([value, 0]).astype(state.dtype))


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping that carries its count across a resume.

    Keras' starts counting from zero at every fit, so a run resumed at epoch 7 trained to its
    last epoch where the uninterrupted run stopped at 11. The epochs already in history.csv are
    replayed through the same rule first.

    Args:
        history: rows of the epochs done before this fit (history.csv).
    """

    def __init__(self, monitor, mode, patience, history=()):
        super().__init__(monitor=monitor, mode=mode, patience=patience)
        self.history = list(history)

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for row in self.history:
            self.on_epoch_end(row["epoch"], row)


class WritePace:
    """When the optional epoch-end writes happen: the best checkpoint, the resume backup and
    the weight histograms.

    At every epoch while a round of them costs at most `share` of the time between rounds. On
    shorter epochs, after the first, at most once every `cost / share` seconds (cost: what the
    last round took; the first one's includes one-time set-up); and always when training stops
    (its end, early stopping, Ctrl-C), so that nothing is lost but what a kill -9 takes.
    Measured here on the regression network at batch 1,024 on JAX: epochs of 0.1 s and rounds of
    35 ms (a best checkpoint, a backup, histograms), which made dlref's epochs 1.8x a bare
    `fit`'s when written every epoch. Where epochs take seconds, every epoch writes, as before.

    What a kill -9 can lose: the epoch in progress and those since the last round, cost / share
    seconds of them at most (0.7 s on that network). The best checkpoint of an epoch between
    rounds is kept in memory (AtomicCheckpoint) and written at the next round, before the
    backup, so that a resume never finds a backup newer than the best model it has seen.

    Args:
        share: the part of the training time the rounds may take; None: write every epoch
            (multi-worker runs, where every worker must save at the same epochs).
        clock: seconds, for tests.
    """

    def __init__(self, share=0.05, clock=time.perf_counter):
        self.share, self.clock = share, clock
        self.epoch, self.writing = None, True
        self.cost, self.last_end = 0.0, None

    def writes(self, epoch):
        """Whether `epoch` is a round; one answer for every writer of the epoch."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.writing = (self.share is None or self.last_end is None
                            or self.clock() - self.last_end >= self.cost / self.share)
            if self.writing:
                self.cost = 0.0
        return self.writing

    @contextlib.contextmanager
    def timed(self):
        """Counts what the enclosed write takes towards its round's cost."""
        started = self.clock()
        try:
            yield
        finally:
            self.last_end = self.clock()
            self.cost += self.last_end - started


def state_variables(model):
    """Every variable a `.keras` file of `model` holds: the model's, and its optimizers' (the
    compiled one and any other the model keeps, as the DCGAN's two)."""
    optimizers = [model.optimizer, *(value for value in vars(model).values()
                                     if isinstance(value, keras.optimizers.Optimizer))]
    found = {}
    for variable in [*model.variables,
                     *(v for o in optimizers if o is not None for v in o.variables)]:
        found.setdefault(id(variable), variable)
    return list(found.values())


def snapshot(variables):
    """Copies of the variables' values (JAX may reuse a buffer once the next step runs)."""
    return [np.array(keras.ops.convert_to_numpy(v.value), copy=True) for v in variables]


@contextlib.contextmanager
def holding(variables, values):
    """The variables hold `values` inside the block, their own values again after it."""
    current = snapshot(variables)
    try:
        for variable, value in zip(variables, values, strict=True):
            variable.assign(value)
        yield
    finally:
        for variable, value in zip(variables, current, strict=True):
            variable.assign(value)


class AtomicBackup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose weights and epoch counter change together, atomically.

    Each epoch's weights (optimizer state included; with a WritePace, each round's and the last
    epoch's) go to a new file; the metadata that names it is replaced after, so a kill at any
    point leaves a consistent (weights, epoch) pair. The previous backup's file is kept too, for
    a resume when the newest one is damaged. Restoring is `restore_backup`'s job, before `fit`:
    the data order of the resumed epochs depends on the epoch it restores. The backup is kept
    when training stops; the training loop deletes it once a run completes.
    """

    def __init__(self, backup_dir, pace=None):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        self.pace, self._saved_epoch = pace or WritePace(share=None), None

    def on_train_begin(self, logs=None):
        pass  # Restored before fit, by restore_backup.

    def on_epoch_end(self, epoch, logs=None):
        self._current_epoch = epoch + 1
        if self.pace.writes(epoch):
            self._save_model()

    def on_train_end(self, logs=None):
        # The epoch training stopped at, when it fell between two rounds (WritePace).
        if self._current_epoch and self._saved_epoch != self._current_epoch:
            self._save_model()

    # Saved at epoch ends only; a batch hook, even one that does nothing, makes Keras call the
    # callbacks in step with every batch on JAX instead of beside the computation.
    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end

    def _save_model(self):
        backup_dir = Path(self.backup_dir)
        name = f"epoch-{self._current_epoch:05d}.weights.h5"
        with self.pace.timed():
            with io.atomic_path(backup_dir / name, suffix=".weights.h5") as tmp:
                self.model.save_weights(tmp, overwrite=True)
            previous = [f for f in _backup_files(backup_dir)[0] if f.name != name][:1]
            io.write_json(backup_dir / BACKUP_METADATA,
                          {"epoch": self._current_epoch, "weights": name})
            for old in backup_dir.glob("epoch-*.weights.h5"):
                if old.name != name and old not in previous:
                    old.unlink()
        self._saved_epoch = self._current_epoch


BACKUP_METADATA = "training_metadata.json"


def _backup_files(backup_dir):
    """(weight files to restore from, newest first; whether the metadata could be read).

    The files are the one the metadata names and the older ones. A file newer than the named
    one was written by an epoch whose backup never finished (a kill between the two writes),
    so it is not used. With damaged or missing metadata: every file.
    """
    folder = Path(backup_dir)
    files = sorted(folder.glob("epoch-*.weights.h5"), reverse=True)
    try:
        named = folder / io.read_json(folder / BACKUP_METADATA)["weights"]
    except (OSError, ValueError, KeyError, TypeError):
        return files, False
    return ([f for f in files if f.name <= named.name] if named in files else files), True


def backup_epoch(backup_dir):
    """The epochs the newest backup covers (0: none), as far as its file names tell; a resume
    continues after it unless that file proves unreadable (restore_backup says so then)."""
    files, _ = _backup_files(backup_dir)
    return _epochs_of(files[0]) if files else 0


def _epochs_of(path):
    return int(path.name.split("-")[1].split(".")[0])  # epoch-00005.weights.h5 -> 5


def restore_backup(model, backup_dir):
    """Loads the newest readable backup into `model`; returns the epochs it covers (0: none).

    A damaged file is skipped for the one before it, and damaged metadata for the newest
    weights, each with a line on stderr saying which epoch training continues after.
    """
    files, metadata_read = _backup_files(backup_dir)
    if files and not metadata_read:
        print(f"Warning: {Path(backup_dir) / BACKUP_METADATA} is missing or damaged; using "
              "the newest weights file of the backup.", file=sys.stderr, flush=True)
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    for path in files:
        try:
            model.load_weights(path)
        except Exception as error:  # h5py raises OSError, Keras ValueError, on a damaged file.
            print(f"Warning: the backup {path} could not be read ({type(error).__name__}); "
                  "trying the one before it.", file=sys.stderr, flush=True)
            continue
        epochs = _epochs_of(path)
        if path != files[0] or not metadata_read:
            print(f"Continuing after epoch {epochs}, from {path.name}.", file=sys.stderr)
        return epochs
    if files:
        print(f"Warning: no backup in {backup_dir} could be read; training starts again from "
              "epoch 1.", file=sys.stderr, flush=True)
    return 0


class HistoryCsv(keras.callbacks.Callback):
    """history.csv, one row per epoch, rewritten atomically each epoch.

    On a resume, rows from the first resumed epoch on (written by an epoch whose backup never
    landed) are dropped, so the file never repeats or skips an epoch.
    """

    def __init__(self, path):
        super().__init__()
        self.path = Path(path)

    def on_train_begin(self, logs=None):
        self.rows = read_history(self.path)
        self._first_epoch_seen = False

    def on_epoch_begin(self, epoch, logs=None):
        if not self._first_epoch_seen:
            self.rows = [row for row in self.rows if int(row["epoch"]) < epoch]
            self._first_epoch_seen = True

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": epoch, **{k: _number(v) for k, v in (logs or {}).items()}})
        keys = list(dict.fromkeys(k for row in self.rows for k in row))
        buffer = stdio.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys, restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        io.write_text(self.path, buffer.getvalue())


def read_history(path):
    """history.csv as a list of dicts with float values ('epoch' as int)."""
    if not Path(path).is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return [
            {k: (int(v) if k == "epoch" else _number(v)) for k, v in row.items() if v != ""}
            for row in csv.DictReader(handle)
        ]


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def best_row(history, monitor, mode):
    """The history row with the best `monitor` value (NaN never counts), or None."""
    rows = [r for r in history if isinstance(r.get(monitor), float) and not math.isnan(r[monitor])]
    if not rows:
        return None
    return (min if mode == "min" else max)(rows, key=lambda r: r[monitor])


def best_value(history, monitor, mode):
    row = best_row(history, monitor, mode)
    return row[monitor] if row else None
