"""Callbacks: ROC-AUC as a real metric, atomic checkpoints and backups, Ctrl-C handling.

Built fresh for every fit by `make_callbacks`, in this order: RocAuc (first, so every later
callback sees `val_roc_auc`), TensorBoard, best and last checkpoints, the history CSV, backup
for resume, TerminateOnNaN, and optional early stopping. Keras' own ModelCheckpoint,
BackupAndRestore and CSVLogger write in place, so a kill mid-save truncates the file; the
versions here write a temporary file and rename it.
"""

import contextlib
import functools
import inspect
import math
import sys
import time
from pathlib import Path

import keras
import numpy as np

from dlref import io
from dlref.errors import DlrefError
from dlref.metrics import roc_auc
from dlref.resumable import (AtomicBackup, EpochSeeds, HistoryCsv, ResumableEarlyStopping,
                             WritePace, best_value, holding, snapshot, state_variables)


class RocAuc(keras.callbacks.Callback):
    """Writes the ROC-AUC on the whole validation set into logs['val_roc_auc'] each epoch
    (metrics.roc_auc: the area sklearn's roc_auc_score gives).

    The scores are those of Keras' own validation pass when `validation_outputs` hands them
    over (labels and outputs of every validation row, in any order: the area depends on the
    pairs alone); otherwise a forward pass of its own computes them.

    Args:
        x_val, y_val: the validation split (labels as 0/1 or class indices).
        batch_size: prediction batch size.
        local: call the model directly instead of predict_on_batch. Under a multi-worker
            strategy predict_on_batch gathers every worker's outputs (twice the rows with two
            workers); each worker holds the same weights, so its own forward pass gives the
            same score everywhere without any exchange.
    """

    def __init__(self, x_val, y_val, batch_size=1024, local=False):
        super().__init__()
        self.x_val, self.y_val, self.batch_size, self.local = x_val, y_val, batch_size, local
        self.handed = []  # (labels, outputs) of the validation pass's batches.
        self._sorted_labels = np.sort(np.asarray(y_val), axis=None)

    def on_test_begin(self, logs=None):
        self.handed.clear()  # The same list: validation_outputs appends to it.

    def on_epoch_end(self, epoch, logs=None):
        labels, scores = self._handed()
        if labels is None:
            labels, scores = self.y_val, self._predict()
        if logs is not None:
            logs["val_roc_auc"] = roc_auc(labels, scores)

    def _handed(self):
        """(labels, scores) of the validation pass, or (None, None) unless its labels are those
        of y_val, in any order (not one-hot, say, nor a part of them)."""
        handed = list(self.handed)
        self.handed.clear()
        if not handed or sum(len(labels) for labels, _ in handed) != len(self.y_val):
            return None, None
        labels = np.concatenate([labels for labels, _ in handed])
        if labels.shape != np.shape(self.y_val):
            return None, None
        if not np.array_equal(np.sort(labels, axis=None), self._sorted_labels):
            return None, None
        return labels, np.concatenate([outputs for _, outputs in handed])

    def _predict(self):
        # predict_on_batch per chunk: model.predict costs ~0.1 s of set-up on every call, more
        # than the whole forward pass on a small validation set.
        predict = ((lambda x: self.model(x, training=False)) if self.local
                   else self.model.predict_on_batch)
        return np.concatenate([
            np.asarray(predict(self.x_val[start:start + self.batch_size]))
            for start in range(0, len(self.x_val), self.batch_size)
        ])


@contextlib.contextmanager
def validation_outputs(model, callback):
    """Hands each batch of Keras' validation pass (labels, outputs) to `callback` (a RocAuc)
    during the enclosed `fit`, so that the ROC-AUC costs no second forward pass: 20 ms an
    epoch for the binary network on 9,000 rows here, 65 ms for the multiclass one, as much as
    the validation itself.

    Keras computes the validation loss through `model.compute_loss(x, y, y_pred, ...,
    training=False)`, its documented override point, on both backends; the model's is wrapped
    for the fit so that the compiled test step sends (y, y_pred) to the host (io_callback on
    JAX, numpy_function on TensorFlow). The test function is made again before and after, so
    that no other evaluation carries the wrapper. Without a callback, under a multi-worker
    strategy (each worker sees part of the rows), with XLA on TensorFlow, for a model whose own
    compute_loss takes no `training`, or for outputs that are not one tensor, nothing is handed
    and RocAuc predicts by itself.
    """
    # numpy_function cannot run inside an XLA cluster (a TensorFlow model compiled with XLA).
    xla = keras.backend.backend() == "tensorflow" and model.jit_compile
    # A compute_loss of the model's own without `training` cannot tell validation apart.
    own = "training" not in inspect.signature(model.compute_loss).parameters
    if callback is None or callback.local or xla or own or "compute_loss" in vars(model):
        yield
        return
    send = _host_sender(callback.handed)
    compute_loss = model.compute_loss

    def handing(x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if not training and y is not None and keras.ops.is_tensor(y_pred) \
                and keras.ops.is_tensor(y):
            send(y, y_pred)
        return compute_loss(x, y, y_pred, sample_weight, training=training)

    model.test_function = None
    model.compute_loss = handing
    try:
        yield
    finally:
        del model.compute_loss
        model.test_function = None


def _host_sender(handed):
    """A function that, traced into a compiled step, appends (y, y_pred) to `handed` as NumPy
    arrays each time the step runs."""

    def receive(y, y_pred):
        handed.append((np.array(y), np.array(y_pred, dtype="float32")))

    if keras.backend.backend() == "jax":
        from jax.experimental import io_callback

        return lambda y, y_pred: io_callback(receive, None, y, y_pred)
    import tensorflow as tf

    def received(y, y_pred):
        receive(y, y_pred)
        return np.int32(0)

    # Stateful: tf.function runs it in program order although nothing uses its result.
    return lambda y, y_pred: tf.numpy_function(received, [y, y_pred], tf.int32, stateful=True)


class AtomicCheckpoint(keras.callbacks.Callback):
    """Saves the whole model when `monitor` improves, or (monitor None) when training stops.

    The last checkpoint is written once, when fit ends (completed, early-stopped or stopped by
    Ctrl-C): the per-epoch backup already covers a kill, and a second full save each epoch cost
    another 0.07 s per epoch for the 784-512-256-128-10 MLP.

    With a WritePace, a best epoch that falls between two rounds of writes is kept in memory
    (every variable of the model and its optimizers) and written at the next round, when
    training stops, or when fit raises (`write_pending`).

    Args:
        path: the `.keras` file.
        monitor: None writes the last checkpoint; a logs key writes the best.
        mode: 'min' or 'max'.
        initial_value_threshold: the best score of earlier runs of this training (resume),
            which a new epoch must beat before it replaces the best checkpoint.
        pace: a resumable.WritePace shared with the backup; None: every best epoch at once.
    """

    def __init__(self, path, monitor=None, mode="min", initial_value_threshold=None, pace=None):
        super().__init__()
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.path, self.monitor, self.mode = Path(path), monitor, mode
        self.initial_value_threshold = initial_value_threshold
        self.pace = pace or WritePace(share=None)
        self.pending, self._state = None, None

    def on_train_begin(self, logs=None):
        worst = math.inf if self.mode == "min" else -math.inf
        initial = self.initial_value_threshold
        self.best = worst if initial is None or math.isnan(initial) else initial
        self.best_epoch, self.pending = None, None

    def on_train_end(self, logs=None):
        if self.monitor is None:
            io.save_model(self.model, self.path)
        self.write_pending()

    def on_epoch_end(self, epoch, logs=None):
        if self.monitor is None:
            return
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise DlrefError(
                f"Metric {self.monitor!r} is not produced by this model. "
                f"Available: {', '.join(sorted(logs or {}))}."
            )
        better = improved(float(value), self.best, self.mode)
        if better:
            self.best, self.best_epoch = float(value), epoch
        if not self.pace.writes(epoch):
            if better:
                self.pending = snapshot(self._variables())
            return
        if better:
            self.pending = None
            with self.pace.timed():
                io.save_model(self.model, self.path)
        else:
            self.write_pending()

    def write_pending(self):
        """Writes the best epoch kept in memory, if any (the model's own state is unchanged)."""
        if self.pending is None:
            return
        values, self.pending = self.pending, None
        with self.pace.timed(), holding(self._variables(), values):
            io.save_model(self.model, self.path)

    def _variables(self):
        if self._state is None:  # After the first epoch: the optimizer's variables exist.
            self._state = state_variables(self.model)
        return self._state


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

    With a WritePace (`pace`), the weight histograms are written at its rounds and for the
    epoch training stops at, beside the checkpoints; the scalars at every epoch.
    """

    on_train_batch_begin = keras.callbacks.Callback.on_train_batch_begin
    on_train_batch_end = keras.callbacks.Callback.on_train_batch_end
    _noted = set()  # Log folders told that the op graph is TensorFlow's (one note per run).

    def __init__(self, *args, pace=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.pace, self._unwritten = pace or WritePace(share=None), None

    def on_train_end(self, logs=None):
        if self._unwritten is not None:
            self._write_histograms(self._unwritten)
        super().on_train_end(logs)

    def set_model(self, model):
        super().set_model(model)
        if self.write_graph and keras.backend.backend() != "tensorflow" \
                and self.log_dir not in self._noted:
            self._noted.add(self.log_dir)
            print(f"Note: on {keras.backend.backend()}, TensorBoard's Graphs tab shows the "
                  "model's layers, not the op graph (--backend tensorflow has both).",
                  file=sys.stderr, flush=True)

    def on_epoch_end(self, epoch, logs=None):
        if self._should_write_train_graph:
            self._write_keras_model_train_graph()
            self._should_write_train_graph = False
        super().on_epoch_end(epoch, logs)

    def _log_epoch_metrics(self, epoch, logs):
        """Keras' epoch scalars (same tags, steps and values), as one event per writer
        (`_write_scalars`). Keras runs one summary op per metric: 3.0-3.8 ms an epoch for the
        regression recipe's five on JAX here, on epochs of 0.01-0.1 s at batch 1,024."""
        if not logs:
            return
        train = self._collect_learning_rate(
            {name: value for name, value in logs.items() if not name.startswith("val_")})
        if self.write_steps_per_second:
            train["steps_per_second"] = self._compute_steps_per_second()
        _write_scalars(self._train_writer, {f"epoch_{k}": v for k, v in train.items()}, epoch)
        _write_scalars(self._val_writer, {f"epoch_{k[4:]}": v for k, v in logs.items()
                                          if k.startswith("val_")}, epoch)

    def on_test_end(self, logs=None):
        """Keras' evaluation scalars at the optimizer's step, as one event (`_write_scalars`).
        Keras converts the step variable and runs a summary op per metric: 2.5-3.3 ms a
        validation pass for the regression recipe on JAX here (its whole validation of 900 rows
        takes 2-6 ms)."""
        optimizer = self.model.optimizer
        if optimizer is not None and hasattr(optimizer, "iterations") and logs:
            step = int(keras.ops.convert_to_numpy(optimizer.iterations))
            _write_scalars(self._val_writer, {f"evaluation_{name}_vs_iterations": value
                                              for name, value in logs.items()}, step)
        self._pop_writer()

    def _log_weights(self, epoch):
        """Keras' hook for the epoch's histograms: written at the pace's rounds; the others
        wait, and only the last of them is written, when training stops."""
        if not self.pace.writes(epoch):
            self._unwritten = epoch
            return
        self._write_histograms(epoch)

    def _write_histograms(self, epoch):
        """Keras' weight histograms, bucketed by NumPy: TensorBoard's own op one-hot encodes
        every value into 30 float64 columns (96 MB for a 784 x 512 kernel). The multiclass
        network's histograms took 80 ms an epoch that way here. Same buckets, same tags."""
        import tensorflow as tf
        from tensorboard.plugins.histogram import metadata

        self._unwritten = None
        described = metadata.create_summary_metadata(display_name=None, description=None)
        with self.pace.timed(), self._train_writer.as_default():
            for layer in self.model.layers:
                for weight in layer.weights:
                    name = weight.path.replace(":", "_")
                    tf.summary.write(f"{name}/histogram", histogram_buckets(weight), step=epoch,
                                     metadata=described)
                    if self.write_images:
                        self._log_weight_as_image(weight, f"{name}/image", epoch)
            self._train_writer.flush()


def _write_scalars(writer, values, step):
    """Writes {tag: number} to a TensorBoard writer as one event at `step`, each value as
    tf.summary.scalar writes it (a float32 tensor, the scalars plugin's metadata).

    The proto is built here (`scalar_summary`) and handed to the writer's own write op:
    `scalar_pb` and `write_raw_pb` took 0.23-0.45 ms a call here in Python around that op
    (a tensor proto per value, name scopes, a smart_cond), 0.04-0.12 ms this way; three calls
    an epoch. A writer without that op (a no-op writer), or a TensorFlow without it, gets
    `write_raw_pb`."""
    if not values:
        return
    import tensorflow as tf

    try:
        from tensorflow.python.ops import gen_summary_ops
    except ImportError:  # TensorFlow's internals moved: the public way, slower.
        gen_summary_ops = None
    serialized = scalar_summary(values).SerializeToString()
    resource = getattr(writer, "_resource", None)
    if resource is None or not hasattr(gen_summary_ops, "write_raw_proto_summary"):
        with writer.as_default():
            tf.summary.experimental.write_raw_pb(serialized, step=step)
        return
    with tf.device("cpu:0"):
        gen_summary_ops.write_raw_proto_summary(resource, tf.constant(step, tf.int64),
                                                tf.constant(serialized))


def scalar_summary(values):
    """A Summary proto of {tag: number}, each value as TensorBoard's `scalar_pb` makes it."""
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, types_pb2

    metadata = _scalar_metadata()
    return summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT, tensor_shape={}, float_val=[float(value)]))
        for tag, value in values.items()])


@functools.cache
def _scalar_metadata():
    from tensorboard.plugins.scalar import metadata

    return metadata.create_summary_metadata(display_name=None, description=None)


def histogram_buckets(values, count=30):
    """TensorBoard's histogram of `values` (its `[count, 3]` float64 rows of left edge, right
    edge and count, as its own summary op buckets them) over the finite values."""
    data = np.asarray(keras.ops.convert_to_numpy(values), dtype="float64").ravel()
    data = data[np.isfinite(data)]
    if not data.size:
        return np.zeros((count, 3))
    low, high = data.min(), data.max()
    if low == high:  # One value: every bucket's edges at it, all of it in the last.
        return np.stack([np.full(count, high), np.full(count, high),
                         np.r_[np.zeros(count - 1), data.size]], axis=1)
    index = np.minimum(np.floor((data - low) / ((high - low) / count)).astype(int), count - 1)
    edges = np.linspace(low, high, count + 1)
    edges[-1] = high
    return np.stack([edges[:-1], edges[1:], np.bincount(index, minlength=count)], axis=1)


class NanStop(keras.callbacks.TerminateOnNaN):
    """TerminateOnNaN, run beside the computation on JAX (Keras' async batch hooks).

    Keras calls batch hooks on the training thread, waiting for each batch's loss, unless every
    callback's hooks are default or async-safe. Adding TerminateOnNaN to a bare fit of the
    multiclass network on JAX measured 13.5k against 17.4k samples/s in one pair of runs here,
    23.4k against 24.4k in another. Run in a thread, its error surfaces a few batches later,
    and at the latest when the epoch ends, before the epoch-end callbacks save.
    """

    async_safe = True


class GracefulInterrupt(keras.callbacks.Callback):
    """Stops training at the end of the epoch in which Ctrl-C or SIGTERM arrived.

    Args:
        requests: the `interrupts.StopRequests` that the caller holds (installed) for the whole
            run, so that a signal during the evaluation is handled too.
    """

    def __init__(self, requests):
        super().__init__()
        self.requests = requests

    def on_epoch_end(self, epoch, logs=None):
        if self.requests.requested:
            self.model.stop_training = True


# The part of the training time that the best checkpoint, backup and histograms may take on short
# epochs (resumable.WritePace): what they may add to a bare Keras fit's time.
WRITE_SHARE = 0.05


def make_callbacks(run_dir, monitor, mode, validation, *, requests, roc_auc=False, history=(),
                   early_stopping_patience=0, histograms=True, seed=None, leading=(),
                   stage_start=0, multi_worker=False):
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
        requests: the run's installed StopRequests (see GracefulInterrupt).
        leading: the recipe's metric callbacks (metric_callbacks hook), placed before
            TensorBoard and the checkpoints so that what they write into the logs (a GAN's
            sample quality) can be logged and monitored.
        stage_start: the first epoch of the current stage (transfer learning): early stopping
            counts from there.
        multi_worker: training under a multi-worker strategy (RocAuc predicts locally).
    """
    run_dir = Path(run_dir)
    best_so_far = best_value(history, monitor, mode)
    # Every worker of a multi-worker run must save at the same epochs: no time-based rounds.
    pace = WritePace(share=None if multi_worker else WRITE_SHARE)
    callbacks = [EpochSeeds(seed)] if seed is not None else []
    callbacks += [RocAuc(*validation, local=multi_worker)] if roc_auc else []
    callbacks += list(leading)
    callbacks += [
        EpochTensorBoard(log_dir=str(run_dir / "logs"), histogram_freq=int(histograms),
                         write_graph=True, update_freq="epoch", profile_batch=0, pace=pace),
        AtomicCheckpoint(run_dir / "checkpoints" / "best.keras", monitor, mode, best_so_far,
                         pace=pace),
        AtomicCheckpoint(run_dir / "checkpoints" / "last.keras"),
        # The history row before the backup: a kill between the two leaves a row the backup
        # does not cover, which HistoryCsv drops on resume, never a backup without its row.
        HistoryCsv(run_dir / "history.csv"),
        AtomicBackup(str(run_dir / "checkpoints" / "backup"), pace=pace),
        NanStop(raise_error=True),
    ]
    if early_stopping_patience > 0:
        stage = [row for row in history if row["epoch"] >= stage_start]
        callbacks.append(ResumableEarlyStopping(monitor, mode, early_stopping_patience, stage))
    callbacks.append(GracefulInterrupt(requests))
    return callbacks


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


class StageMark(keras.callbacks.Callback):
    """Writes the training stage (1, 2, ...) into each epoch's logs, so that history.csv and
    TensorBoard show where a two-stage run (transfer learning) switched."""

    def __init__(self, stage):
        super().__init__()
        self.stage = stage

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["stage"] = self.stage


class StopOnNaNLosses(keras.callbacks.Callback):
    """Raises TerminateOnNaN's error when d_loss or g_loss is NaN or infinite at the end of an
    epoch, before any checkpoint is written: Keras' TerminateOnNaN watches 'loss' alone, which
    a GAN does not have."""

    def on_epoch_end(self, epoch, logs=None):
        bad = {key: value for key, value in (logs or {}).items()
               if key.endswith("loss") and not math.isfinite(float(value))}
        if bad:
            found = ", ".join(f"{key} {value}" for key, value in bad.items())
            raise RuntimeError(f"NaN or Inf loss encountered in epoch {epoch + 1} ({found}).")
