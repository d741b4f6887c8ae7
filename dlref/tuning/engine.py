"""keras-tuner, adapted to dlref's recipes and run folders (used by dlref.tuning).

A recipe is a keras-tuner HyperModel through `search_space(hp, config)`. The tuner and oracle
classes are keras-tuner's own, with four changes:
- every state file (oracle.json, trial.json, the tuner's json) is written atomically, and a
  trial.json that oracle.json never recorded is dropped on reload, so a kill -9 at any moment
  leaves a project that `dlref tune --resume` can reload;
- Keras state is cleared after each trial (not only before the next build), and the trainer's
  RSS is recorded, so memory growth across trials shows in run.json;
- the oracle's Display is replaced by `results.SearchLog` (progress lines, and the run
  folder's trials.csv, best.toml and run.json rewritten after every trial);
- a worker that the oracle tells to wait (Hyperband waiting for other workers' trials) backs
  off instead of asking again at once.
"""

import contextlib
import gc
import json
import logging
import os
import shutil
import sys
import time
import warnings

import keras
import keras_tuner

from dlref import io
from dlref.callbacks import RocAuc
from dlref.training import fit_options, uses_roc_auc
from dlref.tuning.results import COMPLETED, SearchLog

PROJECT = "project"  # keras-tuner's project folder inside the run folder


# --- The recipe as a HyperModel --------------------------------------------------------------


class RecipeHyperModel(keras_tuner.HyperModel):
    """Builds `build_model(search_space(hp, config), data)` and fits it on the recipe's splits.

    The data live here rather than in `search()`'s arguments, which keras-tuner copies.
    """

    def __init__(self, module, config, data):
        super().__init__(name=module.NAME)
        self.module, self.config, self.data = module, config, data
        self.roc_auc = uses_roc_auc(module)

    def build(self, hp):
        keras.utils.set_random_seed(self.config.seed)  # Trials differ in hyperparameters only.
        return self.module.build_model(self.module.search_space(hp, self.config), self.data)

    def fit(self, hp, model, *args, callbacks=(), **kwargs):
        config = self.module.search_space(hp, self.config)
        # RocAuc first, so TensorBoard and keras-tuner's checkpoint see val_roc_auc.
        first = [RocAuc(*self.data.val)] if self.roc_auc else []
        if hasattr(self.module, "metric_callbacks"):  # Metrics a callback computes (a GAN's).
            first += self.module.metric_callbacks(config, self.data, None)
        # The recipe's own callbacks, told by run_dir=None that there is no run folder to log to.
        own = (self.module.callbacks(config, self.data, None)
               if hasattr(self.module, "callbacks") else [])
        options = fit_options(self.module, config)
        return model.fit(*self.data.train, validation_data=self.data.val,
                         batch_size=config.batch_size, shuffle=options["shuffle"],
                         validation_batch_size=options["validation_batch_size"],
                         callbacks=first + list(callbacks) + own, **kwargs)


# --- Oracles and tuners ----------------------------------------------------------------------


class _AtomicState:
    """Oracle mixin: oracle.json and trial.json replaced atomically (keras-tuner overwrites)."""

    def save(self):
        io.write_text(self._get_oracle_fname(), json.dumps(self.get_state()))

    def _save_trial(self, trial):
        path = os.path.join(self._get_trial_dir(trial.trial_id), "trial.json")
        io.write_text(path, json.dumps(trial.get_state()))

    def reload(self):
        super().reload()
        # create_trial writes a new trial's trial.json before oracle.json. A kill between the two
        # leaves a trial that the oracle never recorded and that never trained: forgotten here,
        # or the search would count it and run one trial too many.
        for trial_id in [t for t in self.trials if t not in set(self.start_order)]:
            del self.trials[trial_id]
            shutil.rmtree(self._get_trial_dir(trial_id), ignore_errors=True)


class _Trainer:
    """Tuner mixin: atomic state, Keras state cleared after each trial, RSS recorded."""

    def __init__(self, oracle, hypermodel, log=None, **kwargs):
        self.log, self.rss_mib, self.ran = log, [], []
        self._asked = False
        self._gradients_kept = set(_custom_gradients())
        # Skip Hyperband's / RandomSearch's own __init__, which would build a second oracle.
        keras_tuner.Tuner.__init__(self, oracle=oracle, hypermodel=hypermodel, **kwargs)

    def save(self):
        if not self._is_worker():
            self.oracle.save()
        io.write_text(self._get_tuner_fname(), json.dumps(self.get_state()))

    def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
        """Each trial's TensorBoard logs in logs/<trial>/execution<n>, with its HParams.

        keras-tuner does this on TensorFlow only, so as not to import TensorFlow under another
        backend; dlref writes TensorBoard files with TensorFlow on every backend, and without
        this every JAX trial logged into the same folder, with no HParams.
        """
        from keras_tuner.src.engine import tuner_utils
        from tensorboard.plugins.hparams import api as hparams_api

        for callback in list(callbacks):
            if callback.__class__.__name__ == "TensorBoard":
                callback.log_dir = self._get_tensorboard_dir(callback.log_dir, trial.trial_id,
                                                             execution)
                hparams = tuner_utils.convert_hyperparams_to_hparams(trial.hyperparameters,
                                                                     hparams_api)
                callbacks.append(hparams_api.KerasCallback(
                    writer=callback.log_dir, hparams=hparams, trial_id=trial.trial_id))

    def pre_create_trial(self):
        if self._asked:  # The last request got no trial (IDLE): other workers' trials run.
            time.sleep(0.5)
        self._asked = True

    def on_trial_begin(self, trial):
        self._asked, self._started = False, time.time()
        super().on_trial_begin(trial)

    def on_trial_end(self, trial):
        super().on_trial_end(trial)  # Reports to the oracle and saves.
        keras.backend.clear_session()
        _forget_custom_gradients(self._gradients_kept)
        gc.collect()
        self.rss_mib.append(round(rss_mib(), 1))
        self.ran.append((trial.trial_id, trial.status, round(time.time() - self._started, 2)))
        if trial.status != COMPLETED:
            reason = [line for line in (trial.message or "").splitlines() if line.strip()]
            print(f"trial {trial.trial_id} {trial.status.lower()}: {reason[-1] if reason else ''}",
                  file=sys.stderr, flush=True)
        if self.log is not None:
            self.log.results.record_memory(self.rss_mib, round(_peak_rss_mib(), 1))
        elif self._is_worker():
            print(f"{self.tuner_id}: trial {trial.trial_id} {trial.status.lower()} "
                  f"in {self.ran[-1][2]:.1f} s", flush=True)


def _custom_gradients():
    """TensorFlow's gradient registry (empty where its internals have moved)."""
    try:
        from tensorflow.python.framework import ops

        return ops._gradient_registry._registry
    except (ImportError, AttributeError):
        return {}


def _forget_custom_gradients(kept):
    """Drops the custom gradients that the finished trial's graphs registered.

    TensorFlow 2.19+ registers a gradient closure for each traced all_reduce (every Keras
    optimizer step in a tf.function) in a global registry that nothing ever empties, and the
    closure holds the whole traced graph: about 5 MiB per trial here, which clear_session and
    gc do not free (tensorflow/tensorflow#97697). Once a trial's model is gone, so are the
    graphs that could use these entries.
    """
    registry = _custom_gradients()
    for name in [n for n in registry if n.startswith("CustomGradient-") and n not in kept]:
        del registry[name]


_KINDS = {
    "hyperband": (keras_tuner.oracles.HyperbandOracle, keras_tuner.Hyperband),
    "random": (keras_tuner.oracles.RandomSearchOracle, keras_tuner.RandomSearch),
    "bayesian": (keras_tuner.oracles.BayesianOptimizationOracle, keras_tuner.BayesianOptimization),
}
ORACLES = {name: type(o.__name__, (_AtomicState, o), {}) for name, (o, _) in _KINDS.items()}
TUNERS = {name: type(t.__name__, (_Trainer, t), {}) for name, (_, t) in _KINDS.items()}


def make_oracle(settings, seed):
    objective = keras_tuner.Objective(settings["objective"], settings["direction"])
    common = {"objective": objective, "seed": seed, "max_retries_per_trial": 0}
    if settings["algorithm"] == "hyperband":
        return ORACLES["hyperband"](max_epochs=settings["max_epochs"], factor=settings["factor"],
                                    hyperband_iterations=settings["iterations"], **common)
    return ORACLES[settings["algorithm"]](max_trials=settings["max_trials"], **common)


def make_tuner(module, config, data, run_dir, settings, results=None):
    """The tuner for this process; `results` (chief or single process) logs and writes outputs.

    Build it with the KERASTUNER_* variables of the process's role already set.
    """
    oracle = make_oracle(settings, config.seed)
    log = None
    if results is not None:
        log = oracle._display = SearchLog(oracle, results)  # Before a reload restores its state.
    return TUNERS[settings["algorithm"]](
        oracle, RecipeHyperModel(module, config, data), log=log,
        directory=str(run_dir), project_name=PROJECT)


class _StopCheck(keras.callbacks.Callback):
    """Raises a Ctrl-C again at the next batch if it was lost (interrupts.Latch)."""

    def __init__(self, latch):
        super().__init__()
        self.latch = latch

    def on_train_batch_end(self, batch, logs=None):
        self.latch.check()

    def on_test_batch_end(self, batch, logs=None):
        self.latch.check()


def search(tuner, run_dir, settings, latch=None):
    """Runs this process's share of the trials (all of them, in a single process).

    Args:
        latch: an interrupts.Latch whose request is raised again after every batch.
    """
    callbacks = [*([_StopCheck(latch)] if latch else []),
        # keras-tuner adds its HParams logging to callbacks whose class is named TensorBoard,
        # so Keras' own class here, not dlref's EpochTensorBoard.
        keras.callbacks.TensorBoard(log_dir=str(run_dir / "logs"), histogram_freq=0,
                                    write_graph=False, profile_batch=0),
        keras.callbacks.TerminateOnNaN(raise_error=True),
    ]
    with warnings.catch_warnings(), _quiet():
        # Hyperband warm-starts a model from an earlier trial's weights; its fresh optimizer
        # has no slots yet, which Keras reports on every load.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        # The objects alive now (TensorFlow's, JAX's, Keras' modules; the data) are left out
        # of every collection the search runs: keras-tuner and clear_session collect 4 times
        # per trial, each a walk over all of them. Measured here (regression, 23 trials):
        # TensorFlow 22 -> 30-35 trials/min, JAX 21 -> 24-26.
        gc.collect()
        gc.freeze()
        try:
            tuner.search(epochs=settings["max_epochs"], callbacks=callbacks, verbose=0)
        finally:
            gc.unfreeze()


@contextlib.contextmanager
def _quiet():
    """No tracebacks of failed trials (each gets one line) and no TensorFlow retracing warnings
    (a search retraces for every new model)."""
    from keras_tuner.src import config as tuner_config

    logger = logging.getLogger("tensorflow")
    level, debug = logger.level, tuner_config.DEBUG
    logger.setLevel(logging.ERROR)
    tuner_config.DEBUG = False
    try:
        yield
    finally:
        logger.setLevel(level)
        tuner_config.DEBUG = debug


def rss_mib():
    """Resident memory of this process in MiB (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _peak_rss_mib()


def _peak_rss_mib():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_hparams_config(logdir, hyperparameters, objective):
    """The HParams dashboard's experiment: the search space and the objective's tag.

    keras-tuner writes each trial's values (logs/<trial>/execution0); this names the columns.
    """
    import tensorflow as tf
    from keras_tuner.src.engine import tuner_utils
    from tensorboard.plugins.hparams import api as hparams_api

    hparams = list(tuner_utils.convert_hyperparams_to_hparams(hyperparameters, hparams_api))
    names = dict.fromkeys((objective, "val_loss"))
    metrics = [_hparams_metric(hparams_api, name) for name in names]
    writer = tf.summary.create_file_writer(str(logdir))
    with writer.as_default():
        hparams_api.hparams_config(hparams=hparams, metrics=metrics)
    writer.close()


def _hparams_metric(hparams_api, name):
    # Keras' TensorBoard callback writes val_x as epoch_x under validation/, x under train/.
    group = "validation" if name.startswith("val_") else "train"
    tag = "epoch_" + name.removeprefix("val_")
    return hparams_api.Metric(tag, group=group, display_name=name)
