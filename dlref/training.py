"""THE loop: seed -> data -> model -> callbacks -> fit -> evaluate -> save.

Every recipe except DQN trains through `train`, so run directories, resume, checkpoints,
baselines and plots behave the same everywhere. A run's state lives in its folder only:
`resume` rebuilds everything from run.json, the backup and history.csv.
"""

import contextlib
import math
import sys
from pathlib import Path

from dlref import config as configlib
from dlref import backend, io, registry, runs, saved
from dlref.data import WEIGHTS_FROM_BACKUP, Source
from dlref.errors import DlrefError


def resolve_config(name, config_file=None, overrides=(), epochs=None, seed=None, shortcuts=None):
    """Returns (recipe, preset name or None, resolved values) without importing the recipe.

    Precedence: Config defaults < preset < --config file < --set < --epochs / --seed and the
    recipe-specific `shortcuts` (option name -> value: --base, --weights of transfer).
    """
    recipe, preset = registry.resolve(name)
    defaults = {key: default for key, default, _ in registry.config_fields(recipe)}
    layers = []
    if preset:
        layers.append((f"preset {name}", preset.get("config", {})))
    if config_file:
        document = configlib.read_toml(config_file)
        if document.get("recipe", recipe) != recipe:
            raise DlrefError(
                f"{config_file} is a config for recipe {document['recipe']!r}, not {recipe!r}."
            )
        layers.append((str(config_file), document.get("config", {})))
    layers.append(("--set", configlib.parse_overrides(overrides)))
    given = {k: v for k, v in (shortcuts or {}).items() if v is not None}
    for key in given:
        if key not in defaults:
            owners = [r for r in registry.RECIPES
                      if key in {field for field, _, _ in registry.config_fields(r)}]
            raise DlrefError(f"--{key} goes with the {' and '.join(owners)} recipe, not {recipe}.")
    given.update({k: v for k, v in {"epochs": epochs, "seed": seed}.items() if v is not None})
    layers.append(("options", given))
    values = configlib.merge(defaults, layers)
    if not 0 <= values.get("seed", 0) < 2**32:  # What NumPy's and Keras' generators accept.
        raise DlrefError(f"seed must be a whole number from 0 to {2**32 - 1:,}, got "
                         f"{values['seed']}.")
    return recipe, (name if preset else None), values


def versions():
    from importlib import metadata

    import dlref

    found = {"python": sys.version.split()[0], "dlref": dlref.__version__}
    for package in ("tensorflow", "keras", "keras-tuner", "numpy", "scikit-learn"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def source_and_recipe(name, source, config_file):
    """(recipe or preset name, Source) for train and tune.

    The data source is the config file's [data] (a tuned best.toml, an earlier config.toml)
    with the command line's data options over it. The name is the one given, else the config
    file's recipe, else chosen from the target of --data.
    """
    document = configlib.read_toml(config_file) if config_file else {}
    recorded = configlib.data_table(document, config_file)
    if recorded:
        combined = source.over(Source.from_dict(recorded))
        how = ("with the command line's data options over it" if source.to_dict() else "")
        print(f"Data from {config_file}: {combined.describe()} {how}".rstrip(), flush=True)
        source = combined
    name = name or document.get("recipe")
    if name is None:
        folder = bool(source.data) and Path(source.data).is_dir()  # Of text files per class.
        if not (source.data and (source.target or folder)):
            raise DlrefError("Name a recipe or preset (dlref list shows them), or give --data "
                             "and --target to let dlref choose from the target, or pass "
                             "--resume RUN.")
        from dlref.data.target import task_of

        name, reason = task_of(source)
        why = f"target {source.target!r}: {reason}" if source.target else reason
        print(f"Recipe: {name} ({why})", flush=True)
    return name, source


def show_data(data):
    """The data summary before epoch 1: notes on stdout, warnings on stderr."""
    for line in data.notes:
        print(line)
    for line in data.warnings:
        print(line, file=sys.stderr)
    if data.notes or data.warnings:
        print(flush=True)


def train(name, *, source=Source(), config_file=None, overrides=(), epochs=None, seed=None,
          run_name=None, runs_dir=None, strategy="default", argv=(), shortcuts=None):
    """Trains recipe or preset NAME into a new run folder; returns the run folder."""
    from dlref.backend import STRATEGIES

    root = runs.runs_root(runs_dir)  # A runs folder that is a file fails before the data.
    name, source = source_and_recipe(name, source, config_file)
    if registry.own_process(registry.resolve(name)[0]):  # DQN: keras-rl2 in a worker process.
        from dlref.rl import runner

        return runner.train(name, source=source, config_file=config_file, overrides=overrides,
                            epochs=epochs, seed=seed, run_name=run_name, runs_dir=runs_dir,
                            argv=argv, shortcuts=shortcuts, strategy=strategy)
    recipe, preset, values = resolve_config(name, config_file, overrides, epochs, seed, shortcuts)
    if run_name is not None:
        runs.validate_name(run_name)
    if strategy not in STRATEGIES:
        raise DlrefError(f"Unknown --strategy {strategy!r}. Known: {', '.join(STRATEGIES)}.")
    cluster = None
    if strategy == "multi-worker":
        from dlref import multiworker

        cluster = multiworker.read_cluster()  # A bad TF_CONFIG fails before anything starts.
    backend.for_strategy(strategy)
    module = registry.load(recipe)
    if cluster:
        # Before any other TensorFlow operation (TensorFlow's rule), and before a run folder
        # exists: it waits for every process of the cluster to start.
        multiworker.strategy()
        print(f"Multi-worker training: this process is {cluster.describe()}.", flush=True)
    config = module.Config(**values)
    if hasattr(module, "check_config"):
        module.check_config(config)  # Bad settings fail here, before a run folder exists.
    data = seeded_load(module, config, source)  # Bad data fails here, before a run folder exists.
    show_data(data)
    fields = dict(preset=preset, config=values, source=source.to_dict(), seed=config.seed,
                  versions=versions(), data=describe_data(data), monitor=module.MONITOR,
                  mode=module.MODE, epochs_completed=0, strategy=strategy,
                  backend=backend.current())
    if cluster:
        fields.update(workers=cluster.workers, role="chief" if cluster.chief else "worker")
    if cluster and not cluster.chief:
        return _train_worker(module, config, data, recipe, argv, fields)
    run_dir = runs.create_run(root, recipe, run_name)
    with runs.locked(run_dir):
        runs.new_manifest(run_dir, "train", recipe, argv, **fields)
        io.write_text(run_dir / "config.toml",
                      configlib.to_toml(recipe, values, data=source.to_dict()))
        return _run(module, config, data, run_dir)


def _train_worker(module, config, data, recipe, argv, fields):
    """A multi-worker run's non-chief process: trains in step with the chief, its callbacks
    writing into a scratch folder that is deleted at the end (the chief writes the run folder).
    Returns None; a failed or interrupted worker raises DlrefError."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="dlref-worker-") as scratch:
        run_dir = runs.create_run(scratch, recipe)
        runs.new_manifest(run_dir, "train", recipe, argv, **fields)
        _run(module, config, data, run_dir)
        manifest = runs.read_manifest(run_dir)
    if manifest["status"] != "completed":
        raise DlrefError(f"This worker stopped after {manifest['epochs_completed']} epochs: "
                         f"{manifest.get('error')}")
    print(f"\nThis worker trained {manifest['epochs_completed']} epochs; the chief writes the run "
          "folder.", flush=True)
    return None


def resume(ref, *, runs_dir=None, epochs=None, name=None, steps=None):
    """Continues an interrupted run from its last completed epoch, in the same folder.

    Args:
        epochs: a new total number of epochs (not a number to add); None keeps the run's.
        name: the recipe or preset named with --resume, which must be the run's own.
        steps: dqn: a new total number of environment steps.
    """
    run_dir = runs.find_run(ref, runs.runs_root(runs_dir))
    with runs.locked(run_dir):
        manifest = runs.read_manifest(run_dir)
        if manifest.get("kind") != "train":
            raise DlrefError(f"{run_dir} is a {manifest.get('kind')} run, not a training run.")
        if manifest["status"] == "completed":
            raise DlrefError(f"{run_dir} has already completed; nothing to resume.")
        if name and name not in (manifest["recipe"], manifest.get("preset")):
            raise DlrefError(f"{run_dir.name} is a {manifest['recipe']} run, not {name}: "
                             f"dlref train --resume {run_dir} continues it as it started.")
        if registry.own_process(manifest["recipe"]):
            from dlref.rl import runner

            if epochs is not None:
                raise DlrefError("dqn counts environment steps, not epochs: --steps N sets "
                                 "the new total.")
            return runner.resume(run_dir, manifest, steps=steps)
        if steps is not None:
            raise DlrefError(f"--steps goes with the dqn recipe; {run_dir.name} is a "
                             f"{manifest['recipe']} run (--epochs sets its new total).")
        multi_worker = manifest.get("strategy") == "multi-worker"
        if multi_worker:
            from dlref import multiworker

            multiworker.check_resume(run_dir)
        module = registry.load(manifest["recipe"], manifest.get("backend"))
        done = _check_new_total(run_dir, manifest, epochs)
        defaults = configlib.field_defaults(module.Config)
        changes = {"epochs": epochs} if epochs is not None else {}
        values = configlib.merge(defaults, [("run.json", manifest["config"]),
                                            ("--epochs", changes)])
        config = module.Config(**values)
        if hasattr(module, "check_config"):
            module.check_config(config)
        runs.check_writable(run_dir)
        data = rebuild_data(module, config, manifest, (
            f"The data changed since {run_dir.name} started, or an earlier version of dlref "
            "prepared it: start a new run instead of resuming."))
        io.remove_temporaries(run_dir)
        # A multi-worker run goes on in this one process, with the same global batch size.
        alone = {"strategy": "default", "resumed_alone": True} if multi_worker else {}
        runs.mark_running(run_dir, config=values, **alone)
        where = ("training is over; evaluating and saving" if manifest.get("fit_done")
                 else f"after epoch {done} of {config.epochs}")
        print(f"Resuming {run_dir} {where}.", flush=True)
        return _run(module, config, data, run_dir)


def _check_new_total(run_dir, manifest, epochs):
    """Refuses an --epochs that cannot apply; returns the number of epochs done."""
    from dlref.resumable import backup_epoch
    from dlref.text import plural

    done = backup_epoch(run_dir / "checkpoints" / "backup")
    if epochs is None:
        return done
    if manifest.get("fit_done"):
        raise DlrefError(
            f"Training of {run_dir.name} is over ({plural(done, 'epoch')}); --resume only "
            "finishes its evaluation, so --epochs cannot apply. Leave it out, or start a new "
            f"run: dlref train --config {run_dir / 'config.toml'} --epochs {epochs}")
    if epochs < done:
        raise DlrefError(
            f"{run_dir.name} has trained {plural(done, 'epoch')}, more than --epochs {epochs}. "
            f"--epochs is the new total: give {done} or more, or leave it out to train to "
            f"{manifest['config']['epochs']}.")
    return done


def seeded_load(module, config, source):
    """The recipe's data, with every random generator seeded first (the split depends on it)."""
    import keras

    keras.utils.set_random_seed(config.seed)
    return module.load_data(config, source)


def rebuild_data(module, config, manifest, refusal):
    """A run's data prepared again as when it started, or DlrefError(`refusal`) when its
    fingerprint differs (the file changed, or another version of dlref prepared it)."""
    data = seeded_load(module, config, Source.from_dict(manifest["source"]))
    if data.fingerprint != manifest["data"]["fingerprint"]:
        raise DlrefError(f"{refusal} (fingerprint {data.fingerprint}, was "
                         f"{manifest['data']['fingerprint']})")
    return data


def describe_data(data):
    """What run.json records about the data: its fingerprint, source and split sizes."""
    rows = {split: int(len(getattr(data, split)[1])) for split in ("train", "val", "test")}
    described = {"fingerprint": data.fingerprint, "source": data.meta.get("source"), "rows": rows}
    if data.meta.get("features"):
        described["inputs"] = len(data.meta["features"])
    if data.meta.get("left_out"):
        described["left_out"] = data.meta["left_out"]
    return described


def _run(module, config, data, run_dir):
    """Fits (or skips a finished fit), then evaluates and saves; keeps run.json's status true.

    Ctrl-C and SIGTERM are handled from the first line to the last (interrupts.StopRequests):
    during training they stop at the end of the epoch, after it the run is finished first.
    """
    from dlref.interrupts import StopRequests

    with StopRequests(on_second=lambda: _stop_now(run_dir, requests)) as requests:
        try:
            model = None
            if not runs.read_manifest(run_dir).get("fit_done"):
                model = _fit(module, config, data, run_dir, requests)
                if model is None:
                    return _stopped(run_dir, "interrupted", f"stopped by {requests.requested}",
                                    last_saved=True)
            manifest = runs.read_manifest(run_dir)
            if manifest.get("role") == "worker":
                runs.update_manifest(run_dir, status="completed")
                return run_dir
            # A fit done before a resume; or a multi-worker fit, whose model is reloaded without
            # the strategy so that evaluating, plotting and saving need no workers.
            if model is None or manifest.get("strategy") == "multi-worker":
                model = saved.load_model(run_dir / "checkpoints" / "last.keras")
            requests.phase = "finish"  # Also when the fit was done before a resume.
            saved.finish(module, config, data, model, run_dir)
            io.remove_temporaries(run_dir)
        except KeyboardInterrupt:
            if runs.read_manifest(run_dir).get("status") == "completed":
                return run_dir  # Stopped while printing the summary: nothing is missing.
            return _stopped(run_dir, "interrupted",
                            f"stopped by a second {requests.second or 'Ctrl-C'}")
        except DlrefError as error:
            _stopped(run_dir, "failed", str(error))
            raise
        except Exception as error:
            _stopped(run_dir, "failed", f"{type(error).__name__}: {error}")
            lost = _lost_peer(run_dir, error)
            if lost:
                raise lost from None
            if isinstance(error, RuntimeError) and "NaN or Inf loss" in str(error):
                raise DlrefError(  # TerminateOnNaN's error.
                    f"Training diverged (loss became NaN): {error}. Lower learning_rate "
                    "(--set learning_rate=0.0001) or check the data's scale."
                ) from None
            raise
    return run_dir


def _lost_peer(run_dir, error):
    """For a multi-worker run, a DlrefError when `error` is a lost peer; else None."""
    if runs.read_manifest(run_dir).get("strategy") != "multi-worker":
        return None
    from dlref import multiworker

    return multiworker.lost_peer(error)


def _stop_now(run_dir, requests):
    """The second Ctrl-C: mark the run, say what is saved, and end the process at once (files
    are written atomically, so whatever was being written is left as it was, or as a temporary
    file that the resume removes)."""
    import os

    if runs.read_manifest(run_dir).get("status") != "completed":
        _stopped(run_dir, "interrupted", f"stopped by a second {requests.second}")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def _fit(module, config, data, run_dir, requests):
    """Trains from the last backup (or from scratch), stage by stage; returns the model, or
    None when a signal stopped training before its end."""
    import warnings

    import keras

    from dlref.backend import distribution_strategy
    from dlref.resumable import backup_epoch, read_history, restore_backup

    keras.utils.set_random_seed(config.seed)
    manifest = runs.read_manifest(run_dir)
    scope = distribution_strategy(manifest.get("strategy", "default")).scope
    planned = _stages(module, config)
    # Where each finished stage ended (early stopping may end one before its planned end); the
    # next starts there. The backup holds the optimizer state of the stage it was written in,
    # so that stage is entered before the backup is restored.
    ended = list(manifest.get("stage_ends", []))
    current = min(len(ended), len(planned) - 1)
    backup = run_dir / "checkpoints" / "backup"

    def build():
        with scope():
            built = module.build_model(config, data)
            return module.enter_stage(built, config, data, current) if len(planned) > 1 \
                else built

    # Set while a backup is there to restore: the model's first weights are overwritten at once,
    # so a recipe may skip what only sets them (transfer: pretraining, an ImageNet download).
    restoring = data.extra[WEIGHTS_FROM_BACKUP] = backup_epoch(backup) > 0
    model = build()
    # In the scope: restoring builds the optimizer's variables, which a strategy must own.
    with warnings.catch_warnings(), scope():
        # A backup written in the last epoch of a stage holds that stage's optimizer state,
        # which the next stage (another optimizer) starts without: Keras warns, nothing is lost.
        warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
        first = restore_backup(model, backup)
    if restoring and not first:  # No backup could be read: training starts from a full build.
        data.extra[WEIGHTS_FROM_BACKUP] = False
        model = build()
    data.extra.pop(WEIGHTS_FROM_BACKUP)
    seconds = (manifest.get("timings") or {}).get("epoch_seconds", [])[:first]
    stopped_at = None
    for index in range(current, len(planned)):
        label, end = planned[index]
        start = ended[index - 1] if index else 0
        if index and first == start:
            _start_from_best(model, run_dir, module)  # Not from where the stage before ended.
        if index > current:
            with scope():
                model = module.enter_stage(model, config, data, index)
        if len(planned) > 1:
            print(f"\nStage {index + 1} of {len(planned)}: {label} (epochs {first + 1}-{end}).",
                  flush=True)
        epoch_log, stopped_at = _fit_stage(module, config, data, run_dir, requests, model,
                                           (first, end), start, index + 1)
        seconds += epoch_log.seconds
        first = len(read_history(run_dir / "history.csv"))  # Epochs done, stages before too.
        if not (stopped_at or first >= end):
            break  # Interrupted within the stage.
        if len(planned) > 1:
            ended = [*ended[:index], first]
            runs.update_manifest(run_dir, stage_ends=ended)
        if stopped_at and index + 1 < len(planned):
            print(f"Stage {index + 1} stopped at epoch {stopped_at}: no {module.MONITOR} "
                  f"improvement for {config.early_stopping_patience} epochs.", flush=True)
        if requests.requested:
            break
    epochs_done = len(read_history(run_dir / "history.csv"))
    # Decided once: a signal from here on finds the run finishing, not training.
    finished = bool(stopped_at or epochs_done >= config.epochs or not requests.requested)
    if finished:
        requests.phase = "finish"
    kept = _report_kept_epoch(module, config, run_dir, stopped_at, not finished)
    runs.update_manifest(
        run_dir, epochs_completed=epochs_done, fit_done=finished, stopped_early_at=stopped_at,
        best=kept, timings={"epoch_seconds": seconds},
    )
    return model if finished else None


def _start_from_best(model, run_dir, module):
    """Loads the best weights so far into `model`, when there are any (the next stage starts
    from them)."""
    import warnings

    from dlref.resumable import best_row, read_history

    best = best_row(read_history(run_dir / "history.csv"), module.MONITOR, module.MODE)
    path = run_dir / "checkpoints" / "best.keras"
    if best is None or not path.is_file():
        return
    with warnings.catch_warnings():
        # The optimizer state saved with it is the earlier stage's, and is not needed.
        warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
        model.load_weights(path)
    print(f"\nStarting from the best epoch so far: epoch {best['epoch'] + 1} ({module.MONITOR} "
          f"{best[module.MONITOR]:.4f}).", end="", flush=True)


def _stages(module, config):
    """[(label, last epoch)] of a recipe trained in stages (transfer learning: the frozen base,
    then fine-tuning), else one stage of every epoch."""
    return module.stages(config) if hasattr(module, "stages") else [("training", config.epochs)]


def _fit_stage(module, config, data, run_dir, requests, model, epochs, stage_start, stage):
    """One `fit` from epochs[0] to epochs[1]; returns (EpochLog, epoch early stopping ended it
    at or None)."""
    from dlref.callbacks import (AtomicCheckpoint, EpochLog, RocAuc, StageMark, make_callbacks,
                                 validation_outputs)
    from dlref.fused import fused_steps, plan
    from dlref.resumable import ResumableEarlyStopping, best_value, read_history

    first, end = epochs
    # Rows after the backup's epoch are trained again (HistoryCsv drops them then).
    history = [row for row in read_history(run_dir / "history.csv") if row["epoch"] < first]
    leading = module.metric_callbacks(config, data, run_dir) if hasattr(
        module, "metric_callbacks") else []
    leading += [StageMark(stage)] if hasattr(module, "stages") else []
    callbacks = make_callbacks(
        run_dir, module.MONITOR, module.MODE, data.val, roc_auc=uses_roc_auc(module),
        history=history, early_stopping_patience=getattr(config, "early_stopping_patience", 0),
        seed=config.seed, requests=requests, leading=leading, stage_start=stage_start,
        multi_worker=runs.read_manifest(run_dir).get("strategy") == "multi-worker",
    )
    # A recipe's own callbacks (seq2seq's sample translations, a stateful LSTM's state reset),
    # after the epoch's line.
    own = module.callbacks(config, data, run_dir) if hasattr(module, "callbacks") else []
    epoch_log = EpochLog(module.MONITOR, module.MODE, config.epochs,
                         best_value(history, module.MONITOR, module.MODE))
    options = fit_options(module, config)
    fused, rows = plan(model, data.train, config.batch_size,
                       math.ceil(len(data.train[1]) / config.batch_size)) if getattr(
        module, "FUSED_STEPS", False) else (1, None)
    batches, steps = epoch_batches(data.train, config.batch_size, config.seed, first, end,
                                   shuffle=options["shuffle"], group=fused, rows=rows)
    roc = next((c for c in callbacks if isinstance(c, RocAuc)), None)
    with fused_steps(model, fused, steps, rows), validation_outputs(model, roc):
        try:
            model.fit(batches, steps_per_epoch=steps, initial_epoch=first, epochs=end,
                      shuffle=False,  # epoch_batches shuffles.
                      validation_data=data.val,
                      validation_batch_size=options["validation_batch_size"],
                      callbacks=[*callbacks, epoch_log, *own], verbose=0)
        except BaseException:
            # A best epoch kept in memory between two rounds of writes (WritePace) is still the
            # best one: a NaN or an error later must not lose it. The error is what is reported.
            with contextlib.suppress(Exception):
                for callback in callbacks:
                    if isinstance(callback, AtomicCheckpoint):
                        callback.write_pending()
            raise
    stopper = next((c for c in callbacks if isinstance(c, ResumableEarlyStopping)), None)
    return epoch_log, (stopper.stopped_epoch + 1 if stopper and stopper.stopped_epoch else None)


def _report_kept_epoch(module, config, run_dir, stopped_at, interrupted):
    """Says which epoch the model comes from (and why training ended); returns run.json's
    'best' entry."""
    from dlref.resumable import best_row, read_history
    from dlref.text import plural

    history = read_history(run_dir / "history.csv")
    row = best_row(history, module.MONITOR, module.MODE)
    if row is None:
        if history and not interrupted:
            print(f"\nTrained {plural(len(history), 'epoch')}; keeping the last: {module.MONITOR} "
                  "was never a number to compare.", flush=True)
        return None
    kept = f"keeping epoch {row['epoch'] + 1} ({module.MONITOR} {row[module.MONITOR]:.4f})"
    if stopped_at:
        patience = plural(config.early_stopping_patience, "epoch")
        print(f"\nStopped at epoch {stopped_at}: no {module.MONITOR} improvement for "
              f"{patience}; {kept}.", flush=True)
    elif not interrupted:
        print(f"\nTrained {plural(len(history), 'epoch')}; {kept}.", flush=True)
    return {"epoch": row["epoch"] + 1, "value": row[module.MONITOR]}


def fit_options(module, config):
    """How `fit` feeds the data: shuffled training rows and large validation batches, unless
    the recipe says otherwise (a stateful LSTM needs its rows in order and one batch size)."""
    options = {"shuffle": True, "validation_batch_size": eval_batch_size(config)}
    if hasattr(module, "fit_options"):
        options.update(module.fit_options(config))
    return options


def epoch_batches(train, batch_size, seed, first_epoch, epochs, shuffle=True, group=1,
                  rows=None):
    """The training rows in a new order each epoch, an order drawn from (seed, epoch) alone.

    Keras shuffles arrays with a generator that starts over with every `fit`, so a run resumed
    at epoch 8 used to see epoch 1's order again. Here epoch e's batches are the same whether
    the run was interrupted or not. Returns (the (x, y) batches from `first_epoch` to `epochs`,
    batches per epoch); the batches run on across epochs, so `fit` needs `steps_per_epoch`.
    With `shuffle=False` every epoch sees the rows in their order.

    On TensorFlow the batches are a tf.data.Dataset; on JAX, NumPy batches from a generator:
    Keras converted each tf.data batch to NumPy for JAX at ~3 ms a batch here, more than a
    training step of the multiclass network. The orders differ between the two, so a run
    resumes on the backend it started on. On JAX the rows of `group` batches at a time (the
    batches dlref.fused trains in one call) are gathered as one array, and its batches are
    consecutive parts of it, which the fused step stacks without copying them again. With
    `rows` (dlref.fused.DeviceRows: the arrays already on the device), each batch is `(its row
    numbers,)`, in the same order.
    """
    count = len(train[1])
    if backend.current() != "tensorflow":
        orders = _orders(count, seed, first_epoch, epochs, shuffle)
        feed = (rows.batches(orders, batch_size) if rows is not None
                else _numpy_batches(train, batch_size, orders, group))
        return feed, math.ceil(count / batch_size)
    import tensorflow as tf

    tensors = tf.nest.map_structure(tf.convert_to_tensor, tuple(train))

    def one_epoch(epoch):
        seed_pair = tf.stack([tf.constant(int(seed), tf.int64), epoch])
        order = tf.range(count, dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, seed=seed_pair)
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    def gather(indices):
        return tf.nest.map_structure(lambda tensor: tf.gather(tensor, indices), tensors)

    dataset = tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch)
    dataset = dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE), math.ceil(count / batch_size)


def _orders(rows, seed, first_epoch, epochs, shuffle):
    """Each epoch's order of the rows, drawn from (seed, epoch) alone."""
    import numpy as np

    for epoch in range(first_epoch, epochs):
        yield (np.random.default_rng([int(seed), epoch]).permutation(rows) if shuffle
               else np.arange(rows))


def _numpy_batches(train, batch_size, orders, group=1):
    import keras

    rows, span = len(train[1]), batch_size * max(group, 1)
    for order in orders:
        for start in range(0, rows, span):
            gathered = _rows(train, order[start:start + span])
            for offset in range(0, min(span, rows - start), batch_size):
                part = slice(offset, offset + batch_size)
                yield keras.tree.map_structure(lambda array, part=part: array[part], gathered)


def _rows(structure, indices):
    import keras
    import numpy as np

    return keras.tree.map_structure(lambda array: np.asarray(array)[indices], tuple(structure))


def uses_roc_auc(module):
    """Whether a recipe logs val_roc_auc (RocAuc callback): its monitor, or its ROC_AUC flag."""
    return getattr(module, "ROC_AUC", module.MONITOR == "val_roc_auc")


def eval_batch_size(config):
    """Batch size for validation: evaluation gives the same result at any batch size, and Keras'
    default (the training batch, often 32) made validating 9,000 MNIST rows take 0.5 s per
    epoch here instead of 0.15 s at 1,024."""
    return max(config.batch_size, 1024)


def _stopped(run_dir, status, reason, last_saved=False):
    from dlref.resumable import best_row, read_history

    history = read_history(run_dir / "history.csv")
    manifest = runs.update_manifest(run_dir, status=status, error=reason,
                                    epochs_completed=len(history))
    if status == "interrupted" and manifest.get("role") != "worker":  # Workers keep nothing.
        best = best_row(history, manifest["monitor"], manifest["mode"])
        saved = _saved(run_dir, manifest, history, best, last_saved)
        print(f"\nRun interrupted ({reason}). {saved}\nResume with:  dlref train --resume "
              f"{run_dir}", file=sys.stderr)
    return run_dir


def _saved(run_dir, manifest, history, best, last_saved):
    """What an interrupted run has on disk, and where a resume goes on from."""
    from dlref.resumable import backup_epoch

    if manifest.get("fit_done"):
        return "Training is over; the resume evaluates and saves the model."
    if not history:
        return "No epoch finished, so nothing is saved yet; the resume starts at epoch 1."
    on_disk = best and (run_dir / "checkpoints" / "best.keras").is_file()
    files = [f"best.keras (epoch {best['epoch'] + 1})"] if on_disk else []
    files += ["last.keras"] if last_saved else []
    saved = f"Saved {' and '.join(files)} in {run_dir / 'checkpoints'}; " if files else ""
    epochs = backup_epoch(run_dir / "checkpoints" / "backup")
    return f"{saved}the resume continues after epoch {epochs}."


