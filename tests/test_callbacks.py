"""Callbacks: ROC-AUC as a metric (history, TensorBoard, checkpoints), atomic checkpoints,
backup and history for resume, graceful interrupts. Tiny Dense models, 20-30 rows, 1-3 epochs."""

import math
import json
import os
import signal

import keras
import numpy as np
import pytest
from keras import layers
from sklearn.metrics import roc_auc_score

import helpers
from dlref import callbacks as cb
from dlref import metrics
from dlref import resumable
from dlref.errors import DlrefError
from dlref.interrupts import StopRequests


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
                                  histograms=False, requests=StopRequests())
    history = model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=2,
                        batch_size=8, callbacks=callbacks, verbose=0)

    expected = roc_auc_score(y_val, model.predict(x_val, verbose=0).ravel())
    assert history.history["val_roc_auc"][-1] == pytest.approx(expected, abs=1e-9)

    rows = resumable.read_history(tmp_path / "history.csv")
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


@pytest.mark.parametrize("outputs", [1, 3], ids=["binary", "multiclass"])
def test_roc_auc_from_keras_validation_pass(outputs, monkeypatch):
    """validation_outputs hands Keras' own validation outputs to RocAuc: the same area as a
    forward pass of its own, none of those, and nothing handed outside the fit."""
    x, y = _binary_data(60, seed=7) if outputs == 1 else _multiclass_data(60, seed=7)
    x_val, y_val = x[:25], y[:25]  # Batches of 8: a short last one.
    model = _model(x.shape[1], outputs)
    roc = cb.RocAuc(x_val, y_val)
    own = []
    monkeypatch.setattr(roc, "_predict", lambda: own.append(1))
    expected = []

    class _Expected(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            scores = model.predict(x_val, verbose=0)
            expected.append(roc_auc_score(y_val, scores.ravel() if outputs == 1 else scores,
                                          multi_class="ovr"))

    with cb.validation_outputs(model, roc):
        history = model.fit(x, y, validation_data=(x_val, y_val), validation_batch_size=8,
                            epochs=2, batch_size=8, verbose=0, callbacks=[roc, _Expected()])
    assert history.history["val_roc_auc"] == pytest.approx(expected, abs=1e-9)
    assert not own and "compute_loss" not in vars(model)
    model.evaluate(x_val, y_val, verbose=0)
    assert not roc.handed  # The wrapper went with the fit.


def test_a_compute_loss_without_training_is_left_alone():
    """A model whose own compute_loss predates Keras' `training` argument: nothing is wrapped,
    and RocAuc predicts by itself."""

    class OldStyle(keras.Sequential):
        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
            return super().compute_loss(x, y, y_pred, sample_weight)

    x, y = _binary_data(40, seed=8)
    model = OldStyle([keras.Input((3,)), layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    roc = cb.RocAuc(x[:20], y[:20])
    with cb.validation_outputs(model, roc):
        assert "compute_loss" not in vars(model)
        history = model.fit(x, y, validation_data=(x[:20], y[:20]), epochs=1, batch_size=8,
                            verbose=0, callbacks=[roc])
    scores = model.predict(x[:20], verbose=0).ravel()
    assert history.history["val_roc_auc"][0] == pytest.approx(roc_auc_score(y[:20], scores))


def test_roc_auc_predicts_itself_unless_handed_the_validation_labels():
    y_val = np.array([0, 1, 2, 1])
    roc = cb.RocAuc(np.zeros((4, 2)), y_val)
    scores = np.eye(3)[[0, 1, 2, 0]].astype("float32")
    roc._predict = lambda: np.eye(3)[[0, 1, 2, 1]]
    for handed in ([(np.eye(3)[y_val], scores)],  # One-hot labels.
                   [(y_val[:3], scores[:3])],  # A part of them.
                   [(np.array([0, 1, 2, 2]), scores)]):  # Other labels.
        roc.handed.extend(handed)
        logs = {}
        roc.on_epoch_end(0, logs)
        assert logs["val_roc_auc"] == 1.0 and not roc.handed
    roc.handed.extend([(y_val[2:], scores[2:]), (y_val[:2], scores[:2])])  # Any order.
    logs = {}
    roc.on_epoch_end(0, logs)
    assert logs["val_roc_auc"] == pytest.approx(metrics.roc_auc(y_val, scores))
    assert logs["val_roc_auc"] < 1.0


def test_roc_auc_helper_edge_cases():
    assert math.isnan(metrics.roc_auc([1, 1, 1], [0.2, 0.5, 0.9]))  # One class: undefined.
    assert metrics.roc_auc([0, 1, 0, 1], [[0.1], [0.9], [0.4], [0.3]]) == pytest.approx(0.75)
    # A class absent from the labels is left out of the macro average (sklearn would raise).
    y = np.array([0, 0, 1, 1])
    scores = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1]])
    expected = np.mean([roc_auc_score(y == k, scores[:, k]) for k in (0, 1)])
    assert metrics.roc_auc(y, scores) == pytest.approx(expected)


def test_roc_auc_is_sklearns_with_ties_and_missing_classes():
    rng = np.random.default_rng(5)
    for rows, classes in [(40, 1), (57, 2), (90, 4), (33, 6)]:
        y = rng.integers(0, max(classes, 2), rows)
        scores = np.round(rng.random((rows, classes)), 1)  # Many ties.
        if classes == 1:
            expected = roc_auc_score(y, scores[:, 0])
        else:
            expected = np.mean([roc_auc_score(y == k, scores[:, k]) for k in range(classes)
                                if 0 < np.sum(y == k) < rows])
        assert metrics.roc_auc(y, scores) == pytest.approx(expected, abs=1e-12)
    assert metrics.roc_auc([1, 2, 2, 1], [0.1, 0.8, 0.7, 0.3]) == 1.0  # The larger label is 1.
    assert math.isnan(metrics.roc_auc([0, 1, 2], [[0.2, 0.3, 0.5], [np.nan, 0.1, 0.2],
                                                  [0.1, 0.1, 0.8]]))
    assert math.isnan(metrics.roc_auc([0, 1], [0.3, np.nan]))


def test_weight_histograms_are_tensorboards_buckets(tmp_path):
    import tensorflow as tf
    from tensorboard.plugins.histogram.summary_v2 import _buckets

    x, y = _binary_data(40, seed=2)
    model = _model(x.shape[1])
    board = cb.EpochTensorBoard(log_dir=str(tmp_path), histogram_freq=1, write_graph=False,
                                update_freq="epoch", profile_batch=0)
    model.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[board])
    logged = {}
    for path in (tmp_path / "train").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "histograms":
                    logged[value.tag] = tf.make_ndarray(value.tensor)
    weights = {f"{w.path}/histogram": w for layer in model.layers for w in layer.weights}
    assert set(logged) == set(weights)
    for tag, weight in weights.items():
        expected = _buckets(tf.constant(keras.ops.convert_to_numpy(weight))).numpy()
        np.testing.assert_allclose(logged[tag], expected, rtol=1e-9, err_msg=tag)
    assert cb.histogram_buckets(np.full(4, 2.5))[-1].tolist() == [2.5, 2.5, 4.0]
    assert cb.histogram_buckets(np.array([np.nan, np.inf])).sum() == 0


def test_make_callbacks_order(tmp_path):
    validation = _binary_data(10, seed=0)
    found = cb.make_callbacks(tmp_path, "val_roc_auc", "max", validation, roc_auc=True,
                              requests=StopRequests(),
                              early_stopping_patience=3, seed=1)
    kinds = [type(c).__name__ for c in found]
    assert kinds == ["EpochSeeds", "RocAuc", "EpochTensorBoard", "AtomicCheckpoint",
                     "AtomicCheckpoint", "HistoryCsv", "AtomicBackup", "NanStop",
                     "ResumableEarlyStopping", "GracefulInterrupt"]
    assert found[7].raise_error is True
    assert found[8].monitor == "val_roc_auc" and found[8].patience == 3
    without = cb.make_callbacks(tmp_path, "val_loss", "min", validation, requests=StopRequests())
    assert "RocAuc" not in [type(c).__name__ for c in without]
    assert "ResumableEarlyStopping" not in [type(c).__name__ for c in without]
    assert "EpochSeeds" not in [type(c).__name__ for c in without]


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
    rows = resumable.read_history(path)
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
    assert resumable.read_history(tmp_path / "history.csv")[-1]["epoch"] == 1

    second = _model(3)  # A fresh process: new weights, restored from the backup.
    assert resumable.restore_backup(second, backup) == 2
    restored = []

    class _Capture(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if not restored:
                restored.append([w.copy() for w in self.model.get_weights()])

    second.fit(x, y, epochs=5, initial_epoch=2, batch_size=8, verbose=0, callbacks=[
        cb.AtomicBackup(str(backup)), cb.HistoryCsv(tmp_path / "history.csv"), _Capture()])
    epochs = [row["epoch"] for row in resumable.read_history(tmp_path / "history.csv")]
    assert epochs == [0, 1, 2, 3, 4]
    for before, after in zip(weights_after_two, restored[0], strict=True):
        np.testing.assert_array_equal(before, after)
    files = sorted(p.name for p in backup.iterdir())
    # Kept when training ends, with the epoch before it in case the newest file is damaged.
    assert files == ["epoch-00004.weights.h5", "epoch-00005.weights.h5", "training_metadata.json"]


# --- WritePace: fewer writes on short epochs, nothing lost when training stops --------------


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_write_pace_spaces_rounds_by_their_cost():
    clock = _Clock()
    pace = resumable.WritePace(share=0.1, clock=clock)
    assert pace.writes(0) and pace.writes(0)  # The first epoch writes.
    with pace.timed():
        clock.now += 0.3
    with pace.timed():
        clock.now += 0.2  # A round of 0.5 s: the next one 5 s after it ends at the earliest.
    clock.now += 4.9
    assert not pace.writes(1)
    clock.now += 0.2
    assert not pace.writes(1)  # One answer per epoch, for every writer of it.
    assert pace.writes(2)
    with pace.timed():
        clock.now += 0.1  # Cheaper now: 1 s apart.
    clock.now += 0.9
    assert not pace.writes(3)
    clock.now += 0.1
    assert pace.writes(4)
    every = resumable.WritePace(share=None, clock=clock)
    with every.timed():
        clock.now += 10.0
    assert all(every.writes(epoch) for epoch in range(4))


class _Rounds(resumable.WritePace):
    """A WritePace whose rounds are the given epochs."""

    def __init__(self, rounds):
        super().__init__()
        self.rounds = set(rounds)

    def writes(self, epoch):
        return epoch in self.rounds


class _Weights(keras.callbacks.Callback):
    """Every variable's value at each epoch's end (run before the writers)."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(resumable.snapshot(resumable.state_variables(self.model)))


def _assert_checkpoint_holds(path, model, values):
    loaded = keras.saving.load_model(path)
    for got, want in zip(resumable.snapshot(resumable.state_variables(loaded)), values,
                         strict=True):
        np.testing.assert_array_equal(got, want)
    assert len(resumable.state_variables(loaded)) == len(resumable.state_variables(model))


def test_a_best_epoch_between_rounds_is_written_at_the_next_round(tmp_path):
    x, y = _binary_data(12, seed=5)
    path = tmp_path / "best.keras"
    checkpoint = cb.AtomicCheckpoint(path, "score", "max", pace=_Rounds({0, 3}))
    weights, seen, after = _Weights(), _Probe(path), _Weights()
    model = _model(3)
    model.fit(x, y, epochs=5, batch_size=4, verbose=0, callbacks=[
        _Inject("score", [0.1, 0.9, 0.5, 0.4, 0.3]), weights, checkpoint, seen, after])
    assert seen.seen[0] is not None and seen.seen[1] == seen.seen[2] == seen.seen[0]
    assert seen.seen[3] != seen.seen[0]  # Epoch 1's model, at the round of epoch 3.
    _assert_checkpoint_holds(path, model, weights.epochs[1])  # Optimizer state included.
    # Writing it left the model as it was: epoch 4 trained on from epoch 3's weights.
    assert not np.array_equal(weights.epochs[4][0], weights.epochs[1][0])
    for got, want in zip(after.epochs[3], weights.epochs[3], strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_best_last_epoch_between_rounds_is_written_when_training_stops(tmp_path):
    x, y = _binary_data(12, seed=5)
    path = tmp_path / "best.keras"
    weights, model = _Weights(), _model(3)
    model.fit(x, y, epochs=3, batch_size=4, verbose=0, callbacks=[
        _Inject("score", [0.1, 0.2, 0.3]), weights,
        cb.AtomicCheckpoint(path, "score", "max", pace=_Rounds({0}))])
    _assert_checkpoint_holds(path, model, weights.epochs[2])
    final = resumable.snapshot(resumable.state_variables(model))
    for got, want in zip(final, weights.epochs[2], strict=True):
        np.testing.assert_array_equal(got, want)


def test_the_backup_covers_the_epoch_training_stopped_at(tmp_path):
    x, y = _binary_data(16, seed=6)
    backup = tmp_path / "backup"
    _model(3).fit(x, y, epochs=4, batch_size=8, verbose=0,
                  callbacks=[cb.AtomicBackup(str(backup), pace=_Rounds({0, 1})),
                             _StopAfter(2)])
    assert sorted(p.name for p in backup.iterdir()) == [
        "epoch-00002.weights.h5", "epoch-00003.weights.h5", "training_metadata.json"]
    assert resumable.backup_epoch(backup) == 3


def test_histograms_at_rounds_and_the_last_epoch(tmp_path):
    import tensorflow as tf

    x, y = _binary_data(40, seed=2)
    board = cb.EpochTensorBoard(log_dir=str(tmp_path), histogram_freq=1, write_graph=False,
                                update_freq="epoch", profile_batch=0, pace=_Rounds({0, 2}))
    _model(x.shape[1]).fit(x, y, epochs=5, batch_size=8, verbose=0, callbacks=[board])
    steps = set()
    for path in (tmp_path / "train").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            if any(value.metadata.plugin_data.plugin_name == "histograms"
                   for value in event.summary.value):
                steps.add(event.step)
    assert steps == {0, 2, 4}
    scalars = helpers.scalar_events(tmp_path / "train")
    assert [step for step, _ in scalars["epoch_loss"]] == [0, 1, 2, 3, 4]  # Every epoch.


def test_scalars_are_kerass_own(tmp_path):
    """EpochTensorBoard writes each writer's scalars as one event: the same tags, steps and
    values as Keras' TensorBoard (epoch metrics, learning rate, evaluation vs iterations)."""
    x, y = _binary_data(40, seed=2)
    written = {}
    for name, board in (("keras", keras.callbacks.TensorBoard), ("dlref", cb.EpochTensorBoard)):
        keras.utils.set_random_seed(0)
        model = _model(x.shape[1])
        model.fit(x[:30], y[:30], validation_data=(x[30:], y[30:]), epochs=3, batch_size=8,
                  verbose=0, callbacks=[board(log_dir=str(tmp_path / name), histogram_freq=0,
                                              write_graph=False, profile_batch=0)])
        written[name] = {part: helpers.scalar_events(tmp_path / name / part)
                         for part in ("train", "validation")}
    keras_, dlref_ = written["keras"], written["dlref"]
    assert {"epoch_loss", "epoch_learning_rate"} <= set(keras_["train"])
    assert {"epoch_loss", "evaluation_loss_vs_iterations"} <= set(keras_["validation"])
    for part in ("train", "validation"):
        assert set(dlref_[part]) == set(keras_[part])
        for tag, found in keras_[part].items():
            assert [step for step, _ in dlref_[part][tag]] == [step for step, _ in found], tag
            np.testing.assert_allclose([v for _, v in dlref_[part][tag]],
                                       [v for _, v in found], rtol=1e-6, err_msg=tag)
    assert [s for s, _ in dlref_["validation"]["evaluation_loss_vs_iterations"]] == [4, 8, 12]


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")  # scalar_pb on 1e300
def test_scalar_summary_is_tensorboards_own_and_a_noop_writer_takes_it():
    """The hand-built scalar values are byte for byte what TensorBoard's scalar_pb makes, for
    odd numbers too; a writer without the write op (a no-op one) takes them without error."""
    import tensorflow as tf
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.plugins.scalar import summary_v2

    values = {"epoch_loss": 0.1, "epoch_auc": np.float64(0.987654321), "a/b": -3,
              "nan": float("nan"), "inf": float("inf"), "big": 1e300, "tiny": np.float32(1e-45)}
    expected = summary_pb2.Summary()
    for tag, value in values.items():
        expected.value.extend(summary_v2.scalar_pb(tag, value).value)
    assert cb.scalar_summary(values).SerializeToString() == expected.SerializeToString()
    cb._write_scalars(tf.summary.create_noop_writer(), values, 3)


def _backed_up(tmp_path, epochs=3):
    """A backup folder after `epochs` epochs, and each epoch's weights."""
    x, y = _binary_data(16, seed=6)
    model, weights = _model(3), []

    class _Keep(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            weights.append([w.copy() for w in self.model.get_weights()])

    backup = tmp_path / "backup"
    model.fit(x, y, epochs=epochs, batch_size=8, verbose=0,
              callbacks=[cb.AtomicBackup(str(backup)), _Keep()])
    return backup, weights


def _assert_weights(model, expected):
    for got, want in zip(model.get_weights(), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_damaged_backup_falls_back_to_the_epoch_before(tmp_path, capsys):
    backup, weights = _backed_up(tmp_path)
    (backup / "epoch-00003.weights.h5").write_bytes(b"\x89HDF\r\n truncated")
    model = _model(3)
    assert resumable.restore_backup(model, backup) == 2
    _assert_weights(model, weights[1])
    err = capsys.readouterr().err
    assert "epoch-00003.weights.h5 could not be read" in err and "after epoch 2" in err


def test_truncated_backup_metadata_uses_the_newest_weights(tmp_path, capsys):
    backup, weights = _backed_up(tmp_path)
    (backup / "training_metadata.json").write_text('{"epoch": 3, "wei')
    model = _model(3)
    assert resumable.restore_backup(model, backup) == 3
    _assert_weights(model, weights[2])
    assert "Continuing after epoch 3" in capsys.readouterr().err


def test_no_readable_backup_starts_over(tmp_path, capsys):
    backup, _ = _backed_up(tmp_path, epochs=2)
    for path in backup.glob("*.h5"):
        path.write_bytes(b"garbage")
    assert resumable.restore_backup(_model(3), backup) == 0
    assert "starts again from epoch 1" in capsys.readouterr().err
    assert resumable.restore_backup(_model(3), tmp_path / "none") == 0  # No backup: a fresh run.


def test_weights_newer_than_the_metadata_are_not_used(tmp_path):
    backup, weights = _backed_up(tmp_path)
    (backup / "training_metadata.json").write_text(
        json.dumps({"epoch": 2, "weights": "epoch-00002.weights.h5"}))
    (backup / "epoch-00002.weights.h5").write_bytes(
        (backup / "epoch-00003.weights.h5").read_bytes())  # Stand-in: a readable file.
    model = _model(3)
    assert resumable.restore_backup(model, backup) == 2
    _assert_weights(model, weights[2])


# --- Early stopping and seeds across a resume ------------------------------------------------


def test_early_stopping_counts_the_epochs_before_a_resume():
    history = [{"epoch": 0, "val_loss": 1.0}, {"epoch": 1, "val_loss": 0.5},
               {"epoch": 2, "val_loss": 0.6}, {"epoch": 3, "val_loss": 0.7}]
    stopper = cb.ResumableEarlyStopping("val_loss", "min", patience=3, history=history)
    stopper.set_model(_model(3))
    stopper.on_train_begin()
    assert (stopper.best, stopper.best_epoch, stopper.wait) == (0.5, 1, 2)
    stopper.on_epoch_end(4, {"val_loss": 0.55})
    assert stopper.stopped_epoch == 4 and stopper.model.stop_training
    fresh = cb.ResumableEarlyStopping("val_loss", "min", patience=3)
    fresh.set_model(_model(3))
    fresh.on_train_begin()
    assert fresh.wait == 0 and fresh.best is None


def test_epoch_seeds_depend_on_seed_and_epoch_only():
    assert resumable.epoch_seed(42, 7) == resumable.epoch_seed(42, 7)
    seeds = {resumable.epoch_seed(42, e) for e in range(50)} | {resumable.epoch_seed(43, 0)}
    assert len(seeds) == 51
    assert all(0 <= resumable.epoch_seed(s, e) < 2**31 for s in (0, 2**40) for e in (0, 10**6))


def test_epoch_seeds_make_dropout_masks_repeat():
    inputs = keras.Input(shape=(8,))
    model = keras.Model(inputs, keras.layers.Dropout(0.5)(inputs))
    seeds = cb.EpochSeeds(3)
    seeds.set_model(model)
    ones = np.ones((4, 8), dtype="float32")
    masks = []
    for epoch in (5, 6, 5):
        seeds.on_epoch_begin(epoch)
        masks.append(np.asarray(model(ones, training=True)))
    np.testing.assert_array_equal(masks[0], masks[2])
    assert not np.array_equal(masks[0], masks[1])


def test_epoch_seeds_reseed_python_numpy_and_keras_random():
    import random

    seeds = cb.EpochSeeds(3)
    seeds.set_model(_model(3))
    drawn = []
    for epoch in (2, 2):
        seeds.on_epoch_begin(epoch)
        drawn.append((random.random(), np.random.random(),
                      float(keras.ops.convert_to_numpy(keras.random.uniform(())))))
    assert drawn[0] == drawn[1]


def test_epoch_seeds_leave_tensorflows_seed_and_kernel_cache_alone(monkeypatch):
    # tf.random.set_seed (in keras.utils.set_random_seed) clears TensorFlow's kernel cache, so
    # every tf.function was set up again at its next call: 0.5 s an epoch for timeseries.
    import tensorflow as tf

    called = []
    monkeypatch.setattr(tf.random, "set_seed", called.append)
    seeds = cb.EpochSeeds(3)
    seeds.set_model(_model(3))
    seeds.on_epoch_begin(1)
    assert called == []


def test_read_history_of_a_missing_file_is_empty(tmp_path):
    assert resumable.read_history(tmp_path / "none.csv") == []


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
    with StopRequests() as requests:
        history = _model(3).fit(x, y, epochs=6, batch_size=4, verbose=0,
                                callbacks=[_SignalAt(1, signum), cb.GracefulInterrupt(requests)])
        assert signal.getsignal(signum) is not before  # Held for the whole run, not one fit.
    assert len(history.history["loss"]) == 2  # Epoch 1 ran to its end, then training stopped.
    assert requests.requested == signal.Signals(signum).name
    assert signal.getsignal(signum) is before  # Handlers are restored when the run ends.
    assert "finishing this epoch" in capsys.readouterr().err


def test_a_second_signal_stops_at_once():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with StopRequests() as requests:
            os.kill(os.getpid(), signal.SIGTERM)
            assert requests.requested == "SIGTERM" and requests.second is None
            os.kill(os.getpid(), signal.SIGTERM)
    assert requests.second == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before
