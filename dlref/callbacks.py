"""Callbacks: ROC-AUC as a real metric, atomic checkpoints and backups, Ctrl-C handling.

Built fresh for every fit by `make_callbacks`, in this order: RocAuc (first, so every later
callback sees `val_roc_auc`), TensorBoard, best and last checkpoints, the history CSV, backup
for resume, TerminateOnNaN, and optional early stopping. Keras' own ModelCheckpoint,
BackupAndRestore and CSVLogger write in place, so a kill mid-save truncates the file; the
versions here write a temporary file and rename it.
"""

import csv
import io as stdio
import math
import sys
import time
from pathlib import Path

import keras
import numpy as np

from dlref import io
from dlref.errors import DlrefError
from dlref.interrupts import StopRequests


def roc_auc(y_true, scores):
    """sklearn's ROC-AUC; one-vs-rest macro over the classes present for multiclass scores."""
    from sklearn.metrics import roc_auc_score

    y_true = np.asarray(y_true).astype(int).ravel()
    scores = np.asarray(scores)
    if scores.ndim == 1 or scores.shape[1] == 1:
        scores = scores.reshape(-1)
        return float(roc_auc_score(y_true, scores)) if len(set(y_true)) == 2 else math.nan
    per_class = [
        roc_auc_score(y_true == k, scores[:, k])
        for k in range(scores.shape[1])
        if 0 < np.sum(y_true == k) < len(y_true)
    ]
    return float(np.mean(per_class)) if per_class else math.nan


class RocAuc(keras.callbacks.Callback):
    """Writes sklearn's ROC-AUC on the whole validation set into logs['val_roc_auc'] each epoch.

    Args:
        x_val, y_val: the validation split (labels as 0/1 or class indices).
        batch_size: prediction batch size.
    """

    def __init__(self, x_val, y_val, batch_size=1024):
        super().__init__()
        self.x_val, self.y_val, self.batch_size = x_val, y_val, batch_size

    def on_epoch_end(self, epoch, logs=None):
        # predict_on_batch per chunk: model.predict costs ~0.1 s of set-up on every call, more
        # than the whole forward pass on a small validation set.
        scores = np.concatenate([
            np.asarray(self.model.predict_on_batch(self.x_val[start:start + self.batch_size]))
            for start in range(0, len(self.x_val), self.batch_size)
        ])
        if logs is not None:
            logs["val_roc_auc"] = roc_auc(self.y_val, scores)


class AtomicCheckpoint(keras.callbacks.Callback):
    """Saves the whole model when `monitor` improves, or (monitor None) when training stops.

    The last checkpoint is written once, when fit ends (completed, early-stopped or stopped by
    Ctrl-C): the per-epoch backup already covers a kill, and a second full save each epoch cost
    another 0.07 s per epoch for the 784-512-256-128-10 MLP.

    Args:
        path: the `.keras` file.
        monitor: None writes the last checkpoint; a logs key writes the best.
        mode: 'min' or 'max'.
        initial_value_threshold: the best score of earlier runs of this training (resume),
            which a new epoch must beat before it replaces the best checkpoint.
    """

    def __init__(self, path, monitor=None, mode="min", initial_value_threshold=None):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.path, self.monitor, self.mode = Path(path), monitor, mode
        self.initial_value_threshold = initial_value_threshold

    def on_train_begin(self, logs=None):
        worst = math.inf if self.mode == "min" else -math.inf
        initial = self.initial_value_threshold
        self.best = worst if initial is None or math.isnan(initial) else initial
        self.best_epoch = None

    def on_train_end(self, logs=None):
        if self.monitor is None:
            io.save_model(self.model, self.path)

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor is None:
            return
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise DlrefError(
                f"Metric {self.monitor!r} is not produced by this model. "
                f"Available: {', '.join(sorted(logs or {}))}."
            )
        if improved(float(value), self.best, self.mode):
            self.best, self.best_epoch = float(value), epoch
            io.save_model(self.model, self.path)


def improved(value, best, mode):
    """Whether `value` beats `best` (None: nothing yet) in mode 'min' or 'max'; NaN never does."""
    if value is None or math.isnan(value):
        return False
    return best is None or (value < best if mode == "min" else value > best)


class EpochTensorBoard(keras.callbacks.TensorBoard):
    """Keras' TensorBoard for update_freq='epoch', without its per-batch hooks.

    With epoch updates those hooks write nothing, yet they run for every batch and call
    tf.summary once per metric: 0.30 s per 1,313-batch epoch measured here, 5 % of an MNIST
    epoch. Their one real job, writing the train graph after the first batch, moves to the end
    of the first epoch.
    """

    on_train_batch_begin = keras.callbacks.Callback.on_train_batch_begin
    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end

    def on_epoch_end(self, epoch, logs=None):
        if self._should_write_train_graph:
            self._write_keras_model_train_graph()
            self._should_write_train_graph = False
        super().on_epoch_end(epoch, logs)


class AtomicBackup(keras.callbacks.BackupAndRestore):
    """BackupAndRestore whose weights and epoch counter change together, atomically.

    Each epoch's weights (optimizer state included) go to a new file; the metadata that names it
    is replaced after, so a kill at any point leaves a consistent (weights, epoch) pair. The
    previous epoch's file is kept too, for a resume when the newest one is damaged. Restoring is
    `restore_backup`'s job, before `fit`: the data order of the resumed epochs depends on the
    epoch it restores. The backup is kept when training stops; the training loop deletes it once
    a run completes.
    """

    def __init__(self, backup_dir):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)

    def on_train_begin(self, logs=None):
        pass  # Restored before fit, by restore_backup.

    def _save_model(self):
        backup_dir = Path(self.backup_dir)
        name = f"epoch-{self._current_epoch:05d}.weights.h5"
        with io.atomic_path(backup_dir / name, suffix=".weights.h5") as tmp:
            self.model.save_weights(tmp, overwrite=True)
        previous = _backup_files(backup_dir)[0][:1]
        io.write_json(backup_dir / BACKUP_METADATA, {"epoch": self._current_epoch, "weights": name})
        for old in backup_dir.glob("epoch-*.weights.h5"):
            if old.name != name and old not in previous:
                old.unlink()


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
        epochs = int(path.name.split("-")[1].split(".")[0])
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


class GracefulInterrupt(keras.callbacks.Callback):
    """Stops training at the end of the epoch in which Ctrl-C or SIGTERM arrived.

    Args:
        requests: an `interrupts.StopRequests` the caller holds for the whole run (the training
            loop does, so a signal during the evaluation is handled too); None installs one
            for this fit only.
    """

    def __init__(self, requests=None):
        super().__init__()
        self.requests, self._own = requests, None

    @property
    def requested(self):
        return (self.requests or self._own).requested if (self.requests or self._own) else None

    def on_train_begin(self, logs=None):
        if self.requests is None:
            self._own = StopRequests().__enter__()

    def on_epoch_end(self, epoch, logs=None):
        if self.requested:
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self._own is not None:
            self._own.__exit__(None, None, None)


def epoch_seed(seed, epoch):
    """A 31-bit seed that depends on (seed, epoch) alone, so epoch 8 of a resumed run draws the
    same random numbers as epoch 8 of an uninterrupted one."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1)[0] >> 1)


class EpochSeeds(keras.callbacks.Callback):
    """Re-seeds every random generator at the start of each epoch from (seed, epoch).

    Python's, NumPy's and TensorFlow's global generators, and the state of each Keras
    SeedGenerator in the model (dropout masks). Without it a resumed run replays the random
    numbers of epoch 1 at its first resumed epoch, and dropout diverges from the uninterrupted
    run at once.
    """

    def __init__(self, seed):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        keras.utils.set_random_seed(epoch_seed(self.seed, epoch))
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


def make_callbacks(run_dir, monitor, mode, validation, roc_auc=False, history=(),
                   early_stopping_patience=0, histograms=True, seed=None, requests=None):
    """The callbacks for one fit, in the order DESIGN.md section 6 gives.

    Args:
        run_dir: the run folder (logs/, checkpoints/ and history.csv go there).
        monitor, mode: the metric that picks the best checkpoint.
        validation: (x_val, y_val), for ROC-AUC.
        roc_auc: add RocAuc (classifiers).
        history: history.csv's rows of the epochs done before a resume (the best score so far
            and the early-stopping count come from them).
        early_stopping_patience: epochs without improvement before stopping; 0 = never.
        histograms: weight histograms in TensorBoard every epoch.
        seed: re-seed every epoch from (seed, epoch) (EpochSeeds); None = no re-seeding.
        requests: the run's StopRequests (see GracefulInterrupt).
    """
    run_dir = Path(run_dir)
    best_so_far = best_value(history, monitor, mode)
    callbacks = [EpochSeeds(seed)] if seed is not None else []
    callbacks += [RocAuc(*validation)] if roc_auc else []
    callbacks += [
        EpochTensorBoard(log_dir=str(run_dir / "logs"), histogram_freq=int(histograms),
                         write_graph=True, update_freq="epoch", profile_batch=0),
        AtomicCheckpoint(run_dir / "checkpoints" / "best.keras", monitor, mode, best_so_far),
        AtomicCheckpoint(run_dir / "checkpoints" / "last.keras"),
        # The history row before the backup: a kill between the two leaves a row the backup
        # does not cover, which HistoryCsv drops on resume, never a backup without its row.
        HistoryCsv(run_dir / "history.csv"),
        AtomicBackup(str(run_dir / "checkpoints" / "backup")),
        keras.callbacks.TerminateOnNaN(raise_error=True),
    ]
    if early_stopping_patience > 0:
        callbacks.append(ResumableEarlyStopping(monitor, mode, early_stopping_patience, history))
    callbacks.append(GracefulInterrupt(requests))
    return callbacks


def best_row(history, monitor, mode):
    """The history row with the best `monitor` value (NaN never counts), or None."""
    rows = [r for r in history if isinstance(r.get(monitor), float) and not math.isnan(r[monitor])]
    if not rows:
        return None
    return (min if mode == "min" else max)(rows, key=lambda r: r[monitor])


def best_value(history, monitor, mode):
    row = best_row(history, monitor, mode)
    return row[monitor] if row else None




class EpochLog(keras.callbacks.Callback):
    """One line per epoch: the metrics, a star on a new best, and the epoch's seconds."""

    def __init__(self, monitor, mode, epochs, best=None):
        super().__init__()
        self.monitor, self.mode, self.epochs, self.initial_best = monitor, mode, epochs, best

    def on_train_begin(self, logs=None):
        self.best = self.initial_best
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = logs.get(self.monitor)
        better = improved(value, self.best, self.mode)
        if better:
            self.best = value
        self.seconds.append(round(time.time() - self.started, 4))
        shown = "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if isinstance(v, float))
        width = len(str(self.epochs))
        print(f"epoch {epoch + 1:>{width}}/{self.epochs}  {shown}{'  *' if better else ''}"
              f"  ({self.seconds[-1]:.1f}s)", flush=True)
