"""THE loop: seed -> data -> model -> callbacks -> fit -> evaluate -> save.

Every recipe except DQN trains through `train`, so run directories, resume, checkpoints,
baselines and plots behave the same everywhere. A run's state lives in its folder only:
`resume` rebuilds everything from run.json, the backup and history.csv.
"""

import math
import shutil
import sys
from pathlib import Path

from dlref import config as configlib
from dlref import io, registry, runs
from dlref.data import Source
from dlref.errors import DlrefError


def resolve_config(name, config_file=None, overrides=(), epochs=None, seed=None):
    """Returns (recipe, preset name or None, resolved values) without importing the recipe.

    Precedence: Config defaults < preset < --config file < --set < --epochs / --seed.
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
    shortcuts = {"epochs": epochs, "seed": seed}
    layers.append(("options", {k: v for k, v in shortcuts.items() if v is not None}))
    return recipe, (name if preset else None), configlib.merge(defaults, layers)


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
        if not (source.data and source.target):
            raise DlrefError("Name a recipe or preset (dlref list shows them), or give --data "
                             "and --target to let dlref choose from the target, or pass "
                             "--resume RUN.")
        from dlref.data.target import task_of

        name, reason = task_of(source)
        print(f"Recipe: {name} (target {source.target!r}: {reason})", flush=True)
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
          run_name=None, runs_dir=None, strategy="default", argv=()):
    """Trains recipe or preset NAME into a new run folder; returns the run folder."""
    from dlref.backend import STRATEGIES

    name, source = source_and_recipe(name, source, config_file)
    recipe, preset, values = resolve_config(name, config_file, overrides, epochs, seed)
    if run_name is not None:
        runs.validate_name(run_name)
    if strategy not in STRATEGIES:
        raise DlrefError(f"Unknown --strategy {strategy!r}. Known: {', '.join(STRATEGIES)}.")
    module = registry.load(recipe)
    config = module.Config(**values)
    if hasattr(module, "check_config"):
        module.check_config(config)  # Bad settings fail here, before a run folder exists.
    data = seeded_load(module, config, source)  # Bad data fails here, before a run folder exists.
    show_data(data)
    run_dir = runs.create_run(runs.runs_root(runs_dir), recipe, run_name)
    with runs.locked(run_dir):
        runs.new_manifest(
            run_dir, "train", recipe, argv, preset=preset, config=values,
            source=source.to_dict(), seed=config.seed, versions=versions(),
            data=describe_data(data), monitor=module.MONITOR, mode=module.MODE,
            epochs_completed=0, strategy=strategy,
        )
        io.write_text(run_dir / "config.toml",
                      configlib.to_toml(recipe, values, data=source.to_dict()))
        return _run(module, config, data, run_dir)


def resume(ref, *, runs_dir=None, epochs=None):
    """Continues an interrupted run from its last completed epoch, in the same folder.

    Args:
        epochs: a new total number of epochs (not a number to add); None keeps the run's.
    """
    run_dir = runs.find_run(ref, runs.runs_root(runs_dir))
    with runs.locked(run_dir):
        manifest = runs.read_manifest(run_dir)
        if manifest.get("kind") != "train":
            raise DlrefError(f"{run_dir} is a {manifest.get('kind')} run, not a training run.")
        if manifest["status"] == "completed":
            raise DlrefError(f"{run_dir} has already completed; nothing to resume.")
        module = registry.load(manifest["recipe"])
        done = _check_new_total(run_dir, manifest, epochs)
        defaults = configlib.field_defaults(module.Config)
        changes = {"epochs": epochs} if epochs is not None else {}
        values = configlib.merge(defaults, [("run.json", manifest["config"]),
                                            ("--epochs", changes)])
        config = module.Config(**values)
        runs.check_writable(run_dir)
        data = seeded_load(module, config, Source.from_dict(manifest["source"]))
        if data.fingerprint != manifest["data"]["fingerprint"]:
            raise DlrefError(
                f"The data changed since {run_dir.name} started, or an earlier version of "
                f"dlref prepared it (fingerprint {data.fingerprint}, was "
                f"{manifest['data']['fingerprint']}): start a new run instead of resuming."
            )
        io.remove_temporaries(run_dir)
        runs.mark_running(run_dir, config=values)
        where = ("training is over; evaluating and saving" if manifest.get("fit_done")
                 else f"after epoch {done} of {config.epochs}")
        print(f"Resuming {run_dir} {where}.", flush=True)
        return _run(module, config, data, run_dir)


def _check_new_total(run_dir, manifest, epochs):
    """Refuses an --epochs that cannot apply; returns the number of epochs done."""
    from dlref.callbacks import read_history
    from dlref.text import plural

    done = len(read_history(run_dir / "history.csv"))
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

    with StopRequests() as requests:
        try:
            if not runs.read_manifest(run_dir).get("fit_done"):
                model = _fit(module, config, data, run_dir, requests)
                if model is None:
                    return _stopped(run_dir, "interrupted", f"stopped by {requests.requested}",
                                    last_saved=True)
            else:
                model = _load_model(run_dir / "checkpoints" / "last.keras")
            requests.phase = "finish"  # Also when the fit was done before a resume.
            _finish(module, config, data, model, run_dir)
            io.remove_temporaries(run_dir)
        except KeyboardInterrupt:
            return _stopped(run_dir, "interrupted",
                            f"stopped by a second {requests.second or 'Ctrl-C'}")
        except DlrefError as error:
            _stopped(run_dir, "failed", str(error))
            raise
        except Exception as error:
            _stopped(run_dir, "failed", f"{type(error).__name__}: {error}")
            if isinstance(error, RuntimeError) and "NaN or Inf loss" in str(error):
                raise DlrefError(  # TerminateOnNaN's error.
                    f"Training diverged (loss became NaN): {error}. Lower learning_rate "
                    "(--set learning_rate=0.0001) or check the data's scale."
                ) from None
            raise
    return run_dir


def _fit(module, config, data, run_dir, requests):
    """Trains from the last backup (or from scratch); returns the model, or None when a signal
    stopped training before its end."""
    import keras

    from dlref.backend import distribution_strategy
    from dlref.callbacks import (EpochLog, ResumableEarlyStopping, best_value, make_callbacks,
                                 read_history, restore_backup)

    keras.utils.set_random_seed(config.seed)
    manifest = runs.read_manifest(run_dir)
    with distribution_strategy(manifest.get("strategy", "default")).scope():
        model = module.build_model(config, data)
    first = restore_backup(model, run_dir / "checkpoints" / "backup")
    # Rows after the backup's epoch are trained again (HistoryCsv drops them then).
    history = [row for row in read_history(run_dir / "history.csv") if row["epoch"] < first]
    callbacks = make_callbacks(
        run_dir, module.MONITOR, module.MODE, data.val, roc_auc=uses_roc_auc(module),
        history=history, early_stopping_patience=getattr(config, "early_stopping_patience", 0),
        seed=config.seed, requests=requests,
    )
    epoch_log = EpochLog(module.MONITOR, module.MODE, config.epochs,
                         best_value(history, module.MONITOR, module.MODE))
    batches, steps = epoch_batches(data.train, config.batch_size, config.seed, first,
                                   config.epochs)
    model.fit(batches, steps_per_epoch=steps, initial_epoch=first, epochs=config.epochs,
              shuffle=False,  # epoch_batches shuffles.
              validation_data=data.val, validation_batch_size=eval_batch_size(config),
              callbacks=[*callbacks, epoch_log], verbose=0)
    seconds = (manifest.get("timings") or {}).get("epoch_seconds", [])[:first] + epoch_log.seconds
    stopper = next((c for c in callbacks if isinstance(c, ResumableEarlyStopping)), None)
    stopped_at = stopper.stopped_epoch + 1 if stopper and stopper.stopped_epoch else None
    # Decided once: a signal from here on finds the run finishing, not training.
    finished = bool(stopped_at or not requests.requested)
    if finished:
        requests.phase = "finish"
    kept = _report_kept_epoch(module, config, run_dir, stopped_at, not finished)
    runs.update_manifest(
        run_dir, epochs_completed=len(read_history(run_dir / "history.csv")),
        fit_done=finished, stopped_early_at=stopped_at, best=kept,
        timings={"epoch_seconds": seconds},
    )
    return model if finished else None


def _report_kept_epoch(module, config, run_dir, stopped_at, interrupted):
    """Says which epoch the model comes from (and why training ended); returns run.json's
    'best' entry."""
    from dlref.callbacks import best_row, read_history
    from dlref.text import plural

    history = read_history(run_dir / "history.csv")
    row = best_row(history, module.MONITOR, module.MODE)
    if row is None:
        return None
    kept = f"keeping epoch {row['epoch'] + 1} ({module.MONITOR} {row[module.MONITOR]:.4f})"
    if stopped_at:
        patience = plural(config.early_stopping_patience, "epoch")
        print(f"\nStopped at epoch {stopped_at}: no {module.MONITOR} improvement for "
              f"{patience}; {kept}.", flush=True)
    elif not interrupted:
        print(f"\nTrained {plural(len(history), 'epoch')}; {kept}.", flush=True)
    return {"epoch": row["epoch"] + 1, "value": row[module.MONITOR]}


def epoch_batches(train, batch_size, seed, first_epoch, epochs):
    """The training rows in a new order each epoch, an order drawn from (seed, epoch) alone.

    Keras shuffles arrays with a generator that starts over with every `fit`, so a run resumed
    at epoch 8 used to see epoch 1's order again. Here epoch e's batches are the same whether
    the run was interrupted or not. Returns (tf.data.Dataset of (x, y) batches from
    `first_epoch` to `epochs`, batches per epoch); the dataset runs on across epochs, so `fit`
    needs `steps_per_epoch`.
    """
    import tensorflow as tf

    rows = len(train[1])
    tensors = tf.nest.map_structure(tf.convert_to_tensor, tuple(train))

    def one_epoch(epoch):
        seed_pair = tf.stack([tf.constant(int(seed), tf.int64), epoch])
        order = tf.random.experimental.stateless_shuffle(tf.range(rows, dtype=tf.int64),
                                                         seed=seed_pair)
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    def gather(indices):
        return tf.nest.map_structure(lambda tensor: tf.gather(tensor, indices), tensors)

    dataset = tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch)
    dataset = dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE), math.ceil(rows / batch_size)


def uses_roc_auc(module):
    """Whether a recipe logs val_roc_auc (RocAuc callback): its monitor, or its ROC_AUC flag."""
    return getattr(module, "ROC_AUC", module.MONITOR == "val_roc_auc")


def eval_batch_size(config):
    """Batch size for validation: evaluation gives the same result at any batch size, and Keras'
    default (the training batch, often 32) made validating 9,000 MNIST rows take 0.5 s per
    epoch here instead of 0.15 s at 1,024."""
    return max(config.batch_size, 1024)


def _finish(module, config, data, model, run_dir):
    from dlref import reports
    from dlref.callbacks import best_row, read_history

    history = read_history(run_dir / "history.csv")
    best_path = run_dir / "checkpoints" / "best.keras"
    kept = best_row(history, module.MONITOR, module.MODE) if best_path.is_file() else None
    kept = kept or (history[-1] if history else None)  # Without best.keras: the last epoch.
    if best_path.is_file():
        model.load_weights(best_path)
    if hasattr(module, "calibrate"):
        data.meta.update(module.calibrate(model, data, config))
    result = module.evaluate(model, data)
    classical = None
    if hasattr(module, "score") and len(data.train[1]):
        # Fitted once, then scored and drawn (the binary ROC curve) from the same outputs.
        classical = reports.classical_outputs(data, config.seed)
        for metric, value in classical_scores(module, data, outputs=classical).items():
            result["metrics"][metric]["classical"] = value
    io.save_model(model, run_dir / "model.keras")
    io.write_json(run_dir / "artifacts" / "meta.json", data.meta)
    io.write_json(run_dir / "metrics.json", {"split": "test", "rows": int(len(data.test[1])),
                                             **result})
    _save_reports(module, data, model, run_dir, result, history, kept, classical)
    shutil.rmtree(run_dir / "checkpoints" / "backup", ignore_errors=True)
    headline = next(iter(result["metrics"]))
    runs.update_manifest(
        run_dir, status="completed", error=None,
        test={"metric": headline, "value": result["metrics"][headline]["model"]},
        metrics=result["metrics"],
    )
    _print_summary(run_dir, result)


def _save_reports(module, data, model, run_dir, result, history, kept, classical):
    """Plots (PNG and TensorBoard images), the metrics as text and test scalars in logs/test.

    Args:
        kept: the history row of the epoch the saved model comes from, or None.
        classical: the classical baseline's test outputs, or None.
    """
    from dlref import reports

    loss = module.loss_label(data.meta) if hasattr(module, "loss_label") else "loss"
    kept_epoch = kept["epoch"] + 1 if kept else None
    figures = {"learning_curves": reports.learning_curves(history, module.MONITOR, loss,
                                                          kept_epoch)}
    if hasattr(module, "plots"):
        # Recipes without a classical baseline keep the plain plots(model, data).
        extra = {"classical": classical} if classical is not None else {}
        figures.update(module.plots(model, data, **extra))
    texts = {"test_metrics": reports.metrics_table(result["metrics"]),
             **({"report": result["report"]} if result.get("report") else {})}
    reports.save_figures(figures, run_dir, texts)
    # At the kept epoch's step, so the test point sits where the model came from.
    reports.save_test_scalars(result["metrics"], run_dir, step=kept["epoch"] if kept else 0)


def classical_scores(module, data, seed=None, outputs=None):
    """The recipe's test metrics for HistGradientBoosting fitted on the same training split.

    It decides at 0.5: the threshold tuned on the network's validation scores says nothing
    about HistGradientBoosting's.

    Args:
        seed: fits the baseline here when its test `outputs` are not given.
        outputs: the baseline's test outputs (reports.classical_outputs), when already fitted.
    """
    from dlref import reports

    if outputs is None:
        outputs = reports.classical_outputs(data, seed)
    return module.score(data.test[1], outputs, {**data.meta, "threshold": 0.5})


def _stopped(run_dir, status, reason, last_saved=False):
    from dlref.callbacks import read_history

    epochs = len(read_history(run_dir / "history.csv"))
    manifest = runs.update_manifest(run_dir, status=status, error=reason,
                                    epochs_completed=epochs)
    if status == "interrupted":
        print(f"\nRun interrupted ({reason}). {_saved(run_dir, manifest, epochs, last_saved)}"
              f"\nResume with:  dlref train --resume {run_dir}", file=sys.stderr)
    return run_dir


def _saved(run_dir, manifest, epochs, last_saved):
    """What an interrupted run has on disk, and where a resume goes on from."""
    if manifest.get("fit_done"):
        return "Training is over; the resume evaluates and saves the model."
    if not epochs:
        return "No epoch finished, so nothing is saved yet; the resume starts at epoch 1."
    best = manifest.get("best") or {}
    files = [f"best.keras (epoch {best['epoch']})"] if best.get("epoch") else []
    files += ["last.keras"] if last_saved else []
    saved = f"Saved {' and '.join(files)} in {run_dir / 'checkpoints'}; " if files else ""
    return f"{saved}the resume continues after epoch {epochs}."


def _print_summary(run_dir, result):
    from dlref import reports

    print("\nTest metrics (trivial = constant predictor; classical = HistGradientBoosting):")
    print(reports.metrics_table(result["metrics"]))
    if result.get("report"):
        print("\n" + result["report"].rstrip())
    root = run_dir.parent.parent
    print(f"\nRun:          {run_dir}\nTensorBoard:  dlref tensorboard {root}"
          f"   (or: tensorboard --logdir {root})")


def _load_model(path):
    """Loads a .keras file in Keras safe mode (no code from a Lambda layer or from a function
    outside Keras). A file Keras refuses gives a DlrefError naming it and saying why."""
    import json
    import zipfile

    import keras

    path = Path(path)
    if path.is_symlink() or path.parent.is_symlink():
        raise DlrefError(f"{path} is reached through a symbolic link, which dlref does not "
                         "follow: it loads only the models it saved in their run folder.")
    if path.suffix != ".keras" or not path.is_file():
        raise DlrefError(f"No model file at {path} (expected a local .keras file).")

    def unsafe(node):
        """What safe mode refuses in a model's config.json, or None."""
        if isinstance(node, list):
            return next(filter(None, map(unsafe, node)), None)
        if not isinstance(node, dict):
            return None
        if node.get("class_name") == "Lambda":
            return "it contains a Lambda layer, which could run arbitrary code"
        module = str(node.get("module", ""))
        if node.get("class_name") == "function" and module.split(".")[0] != "keras":
            return f"its config names the function {module}.{node.get('config')}, outside Keras"
        return unsafe(list(node.values()))

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except zipfile.BadZipFile:
        with open(path, "rb") as handle:
            hdf5 = handle.read(8) == b"\x89HDF\r\n\x1a\n"
        why = ("it holds HDF5 (.h5) data, not a .keras zip archive" if hdf5 else
               "it is not a .keras zip archive (it may be truncated or damaged)")
    except KeyError:
        why = "it is a zip archive but not a Keras model (no config.json)"
    except ValueError as error:
        why = f"its config.json is not valid JSON ({error})"
    else:
        try:
            return keras.saving.load_model(str(path), safe_mode=True)
        except Exception as error:  # Keras raises ValueError, TypeError, KeyError, OSError...
            refused = unsafe(config)
            lines = [line for line in str(error).splitlines() if line.strip()]
            why = (f"refused by Keras safe mode: {refused}" if refused else
                   f"Keras cannot read it ({lines[-1] if lines else type(error).__name__})")
    raise DlrefError(f"Cannot load {path}: {why}. dlref only loads models it saved; if dlref "
                     "saved this one, it was changed or damaged since: train the run again.")


def open_run(ref, runs_dir=None):
    """(run folder, manifest, recipe module, model, meta) of a completed run.

    find_run refuses a run reached through a symbolic link or holding one, so model.keras and
    artifacts/meta.json are the run's own files.
    """
    run_dir = runs.find_run(ref, runs.runs_root(runs_dir))
    manifest = runs.read_manifest(run_dir)
    if not (run_dir / "model.keras").is_file():
        raise DlrefError(
            f"{run_dir} has no model.keras (status: {manifest.get('status')}). "
            f"Finish it first: dlref train --resume {run_dir}"
        )
    module = registry.load(manifest["recipe"])
    meta_path = run_dir / "artifacts" / "meta.json"
    try:
        meta = io.read_json(meta_path)
    except (OSError, ValueError) as error:
        raise DlrefError(f"Cannot read {meta_path} ({error}): predictions need it (the scaler, "
                         "the labels). Train the run again.") from None
    return run_dir, manifest, module, _load_model(run_dir / "model.keras"), meta


def evaluate_run(ref, runs_dir=None, data_path=None):
    """Test metrics of a saved model: on its own test split, or on a labelled file."""
    run_dir, manifest, module, model, meta = open_run(ref, runs_dir)
    if data_path:
        data = module.load_labelled(data_path, meta)
    else:
        defaults = configlib.field_defaults(module.Config)
        config = module.Config(**configlib.merge(defaults, [("run.json", manifest["config"])]))
        data = seeded_load(module, config, Source.from_dict(manifest["source"]))
        if data.fingerprint != manifest["data"]["fingerprint"]:
            # Its test split (and the inputs' encoding) would not be the one the model saw.
            raise DlrefError(
                f"The data of {run_dir.name} changed since it was trained (or was prepared by an "
                "earlier version of dlref), so its test split cannot be rebuilt. Evaluate it on "
                "a labelled file instead: dlref evaluate RUN --data FILE")
        data.meta = meta
    result = module.evaluate(model, data)
    saved = io.read_json(run_dir / "metrics.json") if not data_path else {}
    for metric, row in result["metrics"].items():
        if "classical" in saved.get("metrics", {}).get(metric, {}):
            row["classical"] = saved["metrics"][metric]["classical"]
    return run_dir, result


def predict_run(ref, data_path, output=None, runs_dir=None, overwrite=False):
    """Writes predictions for a CSV of new rows; returns the output path and row count."""
    _, _, module, model, meta = open_run(ref, runs_dir)
    output = Path(output) if output else Path(data_path).with_suffix(".predictions.csv")
    if output.exists() and not overwrite:
        raise DlrefError(f"{output} exists; choose another --output or pass --overwrite.")
    frame = module.predict(model, meta, data_path)
    with io.atomic_path(output, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False)
    return output, len(frame)
