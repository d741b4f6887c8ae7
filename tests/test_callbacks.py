"""Callbacks: ROC-AUC as a metric (history, TensorBoard, checkpoints), atomic checkpoints,
backup and history for resume, graceful interrupts. Tiny Dense models, 20-30 rows, 1-3 epochs."""

import math
import os
import signal

import keras
import numpy as np
import pytest
from keras import layers
from sklearn.metrics import roc_auc_score

import helpers
from dlref import callbacks as cb
from dlref.errors import DlrefError


def _binary_data(rows, seed):
    rng = np.random.default_rng(seed)
    y = (np.arange(rows) % 2).astype("float32")
    x = rng.normal(size=(rows, 3)).astype("float32")
    x[:, 0] += y  # Learnable but not separable: AUC strictly between 0.5 and 1 is likely.
    return x, y


def _multiclass_data(rows, seed, classes=3):
    rng = np.random.default_rng(seed)
    y = (np.arange(rows) % classes).astype("int32")
    x = rng.normal(size=(rows, 4)).astype("float32")
    x[:, 0] += 0.8 * y
    return x, y


def _model(inputs, outputs=1):
    model = keras.Sequential([
        keras.Input((inputs,)),
        layers.Dense(4, activation="relu"),
        layers.Dense(outputs, activation="sigmoid" if outputs == 1 else "softmax"),
    ])
    loss = "binary_crossentropy" if outputs == 1 else "sparse_categorical_crossentropy"
    model.compile(optimizer="adam", loss=loss)
    return model


class _Inject(keras.callbacks.Callback):
    """Puts a scripted value into logs[key] each epoch (a stand-in for a metric)."""

    def __init__(self, key, values):
        super().__init__()
        self.key, self.values = key, values

    def on_epoch_end(self, epoch, logs=None):
        logs[self.key] = self.values[epoch]


class _Probe(keras.callbacks.Callback):
    """Records, after each epoch, whether a file exists and its modification time."""

    def __init__(self, path):
        super().__init__()
        self.path, self.seen = path, []

    def on_epoch_end(self, epoch, logs=None):
        stat = self.path.stat() if self.path.exists() else None
        self.seen.append(stat.st_mtime_ns if stat else None)


# --- RocAuc ----------------------------------------------------------------------------------


def test_roc_auc_through_make_callbacks(tmp_path):
    """One fit checks: val_roc_auc equals sklearn's on the same predictions; it is a column of
    history.csv; TensorBoard's validation events hold epoch_roc_auc; the best checkpoint
    follows it."""
    x_train, y_train = _binary_data(24, seed=1)
    x_val, y_val = _binary_data(20, seed=2)
    model = _model(3)
    callbacks = cb.make_callbacks(tmp_path, "val_roc_auc", "max", (x_val, y_val), roc_auc=True,
                                  histograms=False)
    history = model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=2,
                        batch_size=8, callbacks=callbacks, verbose=0)

    expected = roc_auc_score(y_val, model.predict(x_val, verbose=0).ravel())
    assert history.history["val_roc_auc"][-1] == pytest.approx(expected, abs=1e-9)

    rows = cb.read_history(tmp_path / "history.csv")
    assert [row["epoch"] for row in rows] == [0, 1]
    assert [row["val_roc_auc"] for row in rows] == pytest.approx(history.history["val_roc_auc"])

    validation = helpers.scalar_events(tmp_path / "logs" / "validation")
    assert "epoch_roc_auc" in validation
    logged = dict(validation["epoch_roc_auc"])
    assert sorted(logged) == [0, 1]
    assert [logged[0], logged[1]] == pytest.approx(history.history["val_roc_auc"], abs=1e-6)
    assert "epoch_roc_auc" not in helpers.scalar_events(tmp_path / "logs" / "train")

    best = callbacks[2]
    assert isinstance(best, cb.AtomicCheckpoint) and best.monitor == "val_roc_auc"
    assert best.best == pytest.approx(max(history.history["val_roc_auc"]))
    assert (tmp_path / "checkpoints" / "best.keras").is_file()


def test_multiclass_roc_auc_is_one_vs_rest_macro(tmp_path):
    x_train, y_train = _multiclass_data(30, seed=3)
    x_val, y_val = _multiclass_data(24, seed=4)
    model = _model(4, outputs=3)
    history = model.fit(x_train, y_train, epochs=2, batch_size=10, verbose=0,
                        callbacks=[cb.RocAuc(x_val, y_val)])
    scores = model.predict(x_val, verbose=0)
    expected = roc_auc_score(y_val, scores, multi_class="ovr", average="macro")
    assert history.history["val_roc_auc"][-1] == pytest.approx(expected, abs=1e-9)
    assert 0.0 < expected < 1.0


def test_roc_auc_helper_edge_cases():
    assert math.isnan(cb.roc_auc([1, 1, 1], [0.2, 0.5, 0.9]))  # One class: undefined.
    assert cb.roc_auc([0, 1, 0, 1], [[0.1], [0.9], [0.4], [0.3]]) == pytest.approx(0.75)
    # A class absent from the labels is left out of the macro average (sklearn would raise).
    y = np.array([0, 0, 1, 1])
    scores = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1]])
    expected = np.mean([roc_auc_score(y == k, scores[:, k]) for k in (0, 1)])
    assert cb.roc_auc(y, scores) == pytest.approx(expected)


def test_make_callbacks_order(tmp_path):
    validation = _binary_data(10, seed=0)
    found = cb.make_callbacks(tmp_path, "val_roc_auc", "max", validation, roc_auc=True,
                              early_stopping_patience=3)
    kinds = [type(c).__name__ for c in found]
    assert kinds == ["RocAuc", "EpochTensorBoard", "AtomicCheckpoint", "AtomicCheckpoint",
                     "HistoryCsv", "AtomicBackup", "TerminateOnNaN", "EarlyStopping",
                     "GracefulInterrupt"]
    assert found[6].raise_error is True
    assert found[7].monitor == "val_roc_auc" and found[7].patience == 3
    without = cb.make_callbacks(tmp_path, "val_loss", "min", validation)
    assert "RocAuc" not in [type(c).__name__ for c in without]
    assert "EarlyStopping" not in [type(c).__name__ for c in without]


# --- AtomicCheckpoint ------------------------------------------------------------------------


def _fit_with(checkpoint, values, key="score"):
    x, y = _binary_data(12, seed=5)
    probe = _Probe(checkpoint.path)
    _model(3).fit(x, y, epochs=len(values), batch_size=12, verbose=0,
                  callbacks=[_Inject(key, values), checkpoint, probe])
    return probe.seen


def test_threshold_blocks_worse_epochs(tmp_path):
    path = tmp_path / "best.keras"
    checkpoint = cb.AtomicCheckpoint(path, "score", "max", initial_value_threshold=0.6)
    seen = _fit_with(checkpoint, [0.5, 0.7, 0.65])
    assert seen[0] is None  # 0.5 does not beat the earlier best 0.6: nothing saved.
    assert seen[1] is not None and seen[2] == seen[1]  # 0.7 saved; 0.65 left it alone.
    assert checkpoint.best == 0.7 and checkpoint.best_epoch == 1
    assert keras.saving.load_model(path).count_params() > 0


def test_threshold_min_mode_never_saves_when_never_better(tmp_path):
    path = tmp_path / "best.keras"
    _fit_with(cb.AtomicCheckpoint(path, "score", "min", initial_value_threshold=0.3),
              [0.5, 0.4])
    assert not path.exists()


def test_without_threshold_the_first_epoch_saves(tmp_path):
    path = tmp_path / "best.keras"
    seen = _fit_with(cb.AtomicCheckpoint(path, "score", "min",
                                         initial_value_threshold=float("nan")), [0.5, 0.6])
    assert seen[0] is not None and seen[1] == seen[0]


def test_nan_score_never_saves(tmp_path):
    path = tmp_path / "best.keras"
    _fit_with(cb.AtomicCheckpoint(path, "score", "max"), [float("nan")])
    assert not path.exists()


def test_last_checkpoint_saves_when_training_ends_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "last.keras"
    seen = _fit_with(cb.AtomicCheckpoint(path), [0.0, 0.0])
    assert seen == [None, None]  # Not per epoch: the backup covers a kill.
    assert [p.name for p in tmp_path.iterdir()] == ["last.keras"]
    assert keras.saving.load_model(path).count_params() > 0


def test_missing_monitor_is_an_error_naming_the_keys(tmp_path):
    with pytest.raises(DlrefError, match="'val_auc' is not produced.*Available: .*loss"):
        _fit_with(cb.AtomicCheckpoint(tmp_path / "b.keras", "val_auc", "max"), [0.1])


def test_checkpoint_mode_is_validated(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'min' or 'max'"):
        cb.AtomicCheckpoint(tmp_path / "b.keras", "loss", "maximum")


# --- HistoryCsv and AtomicBackup (resume) ----------------------------------------------------


def test_history_drops_rows_from_the_resumed_epoch_on(tmp_path):
    path = tmp_path / "history.csv"
    history = cb.HistoryCsv(path)
    history.on_train_begin()
    for epoch in range(4):
        history.on_epoch_end(epoch, {"loss": 10.0 + epoch})
    # A resume from epoch 2 (epochs 2 and 3 ran, but their backup never landed).
    resumed = cb.HistoryCsv(path)
    resumed.on_train_begin()
    resumed.on_epoch_begin(2)
    resumed.on_epoch_end(2, {"loss": 1.0, "val_roc_auc": 0.9})
    rows = cb.read_history(path)
    assert [row["epoch"] for row in rows] == [0, 1, 2]
    assert [row["loss"] for row in rows] == [10.0, 11.0, 1.0]
    assert rows[2]["val_roc_auc"] == 0.9 and "val_roc_auc" not in rows[0]


class _StopAfter(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.model.stop_training = True


def test_backup_and_history_resume_without_gaps(tmp_path):
    x, y = _binary_data(16, seed=6)
    backup = tmp_path / "backup"
    first = _model(3)
    first.fit(x, y, epochs=5, batch_size=8, verbose=0, callbacks=[
        cb.AtomicBackup(str(backup)), cb.HistoryCsv(tmp_path / "history.csv"), _StopAfter(1)])
    weights_after_two = [w.copy() for w in first.get_weights()]
    assert cb.read_history(tmp_path / "history.csv")[-1]["epoch"] == 1

    second = _model(3)  # A fresh process: new weights, restored from the backup.
    restored = []

    class _Capture(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if not restored:
                restored.append([w.copy() for w in self.model.get_weights()])

    second.fit(x, y, epochs=5, batch_size=8, verbose=0, callbacks=[
        cb.AtomicBackup(str(backup)), cb.HistoryCsv(tmp_path / "history.csv"), _Capture()])
    assert [row["epoch"] for row in cb.read_history(tmp_path / "history.csv")] == [0, 1, 2, 3, 4]
    for before, after in zip(weights_after_two, restored[0], strict=True):
        np.testing.assert_array_equal(before, after)
    files = sorted(p.name for p in backup.iterdir())
    assert files == ["epoch-00005.weights.h5", "training_metadata.json"]  # Backup kept.


def test_read_history_of_a_missing_file_is_empty(tmp_path):
    assert cb.read_history(tmp_path / "none.csv") == []


# --- GracefulInterrupt -----------------------------------------------------------------------


class _SignalAt(keras.callbacks.Callback):
    def __init__(self, epoch, signum):
        super().__init__()
        self.epoch, self.signum = epoch, signum

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_finishes_the_epoch_then_stops(signum, capsys):
    before = signal.getsignal(signum)
    x, y = _binary_data(12, seed=7)
    interrupt = cb.GracefulInterrupt()
    history = _model(3).fit(x, y, epochs=6, batch_size=4, verbose=0,
                            callbacks=[_SignalAt(1, signum), interrupt])
    assert len(history.history["loss"]) == 2  # Epoch 1 ran to its end, then training stopped.
    assert interrupt.requested == signal.Signals(signum).name
    assert signal.getsignal(signum) is before  # Handlers are restored after fit.
    assert "finishing this epoch" in capsys.readouterr().err
