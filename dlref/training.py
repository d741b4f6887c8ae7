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
    runs.new_manifest(
        run_dir, "train", recipe, argv, preset=preset, config=values,
        source=source.to_dict(), seed=config.seed, versions=versions(),
        data=describe_data(data), monitor=module.MONITOR, mode=module.MODE, epochs_completed=0,
        strategy=strategy,
    )
    io.write_text(run_dir / "config.toml",
                  configlib.to_toml(recipe, values, data=source.to_dict()))
    return _run(module, config, data, run_dir)


def resume(ref, *, runs_dir=None, epochs=None):
    """Continues an interrupted run from its last completed epoch, in the same folder."""
    run_dir = runs.find_run(ref, runs.runs_root(runs_dir))
    manifest = runs.read_manifest(run_dir)
    if manifest.get("kind") != "train":
        raise DlrefError(f"{run_dir} is a {manifest.get('kind')} run, not a training run.")
    if manifest["status"] == "completed":
        raise DlrefError(f"{run_dir} has already completed; nothing to resume.")
    if manifest["status"] == "running" and runs.is_alive(manifest):
        raise DlrefError(f"{run_dir} is still running (process {manifest.get('pid')}).")
    module = registry.load(manifest["recipe"])
    defaults = configlib.field_defaults(module.Config)
    changes = {"epochs": epochs} if epochs is not None else {}
    values = configlib.merge(defaults, [("run.json", manifest["config"]), ("--epochs", changes)])
    config = module.Config(**values)
    data = seeded_load(module, config, Source.from_dict(manifest["source"]))
    if data.fingerprint != manifest["data"]["fingerprint"]:
        raise DlrefError(
            f"The data changed since {run_dir.name} started, or an earlier version of dlref "
            f"prepared it (fingerprint {data.fingerprint}, was "
            f"{manifest['data']['fingerprint']}): start a new run instead of resuming."
        )
    runs.mark_running(run_dir, config=values)
    backup = run_dir / "checkpoints" / "backup" / "training_metadata.json"
    done = io.read_json(backup)["epoch"] if backup.is_file() else 0
    print(f"Resuming {run_dir} after epoch {done} of {config.epochs}.")
    return _run(module, config, data, run_dir)


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
    """Fits (or skips a finished fit), then evaluates and saves; keeps run.json's status true."""
    try:
        manifest = runs.read_manifest(run_dir)
        if not manifest.get("fit_done"):
            model, interrupted = _fit(module, config, data, run_dir)
            if interrupted:
                return _stopped(run_dir, "interrupted", f"stopped by {interrupted}")
        else:
            model = _load_model(run_dir / "checkpoints" / "last.keras")
        _finish(module, config, data, model, run_dir)
    except KeyboardInterrupt:
        return _stopped(run_dir, "interrupted", "stopped by a second Ctrl-C")
    except DlrefError as error:
        _stopped(run_dir, "failed", str(error))
        raise
    except Exception as error:
        _stopped(run_dir, "failed", f"{type(error).__name__}: {error}")
        if isinstance(error, RuntimeError) and "NaN or Inf loss" in str(error):  # TerminateOnNaN
            raise DlrefError(
                f"Training diverged (loss became NaN): {error}. Lower learning_rate "
                "(--set learning_rate=0.0001) or check the data's scale."
            ) from None
        raise
    return run_dir


def _fit(module, config, data, run_dir):
    import keras

    from dlref.backend import distribution_strategy
    from dlref.callbacks import EpochLog, GracefulInterrupt, make_callbacks, read_history

    keras.utils.set_random_seed(config.seed)
    strategy = runs.read_manifest(run_dir).get("strategy", "default")
    with distribution_strategy(strategy).scope():
        model = module.build_model(config, data)
    history = read_history(run_dir / "history.csv")
    timings = runs.read_manifest(run_dir).get("timings") or {}
    best_row = _best_row(history, module.MONITOR, module.MODE)
    best = best_row[module.MONITOR] if best_row else None
    callbacks = make_callbacks(
        run_dir, module.MONITOR, module.MODE, data.val, roc_auc=uses_roc_auc(module),
        best_so_far=best,
        early_stopping_patience=getattr(config, "early_stopping_patience", 0),
    )
    epoch_log = EpochLog(module.MONITOR, module.MODE, config.epochs, best)
    callbacks.append(epoch_log)
    model.fit(*data.train, validation_data=data.val, epochs=config.epochs,
              batch_size=config.batch_size, validation_batch_size=eval_batch_size(config),
              callbacks=callbacks, verbose=0)
    seconds = timings.get("epoch_seconds", [])[:len(history)] + epoch_log.seconds
    history = read_history(run_dir / "history.csv")
    interrupt = next(c for c in callbacks if isinstance(c, GracefulInterrupt))
    best_row = _best_row(history, module.MONITOR, module.MODE)
    runs.update_manifest(
        run_dir, epochs_completed=len(history), fit_done=not interrupt.requested,
        best={"epoch": best_row["epoch"] + 1, "value": best_row.get(module.MONITOR)} if best_row
        else None,
        timings={"epoch_seconds": seconds},
    )
    return model, interrupt.requested


def uses_roc_auc(module):
    """Whether a recipe logs val_roc_auc (RocAuc callback): its monitor, or its ROC_AUC flag."""
    return getattr(module, "ROC_AUC", module.MONITOR == "val_roc_auc")


def eval_batch_size(config):
    """Batch size for validation: evaluation gives the same result at any batch size, and Keras'
    default (the training batch, often 32) made validating 9,000 MNIST rows take 0.5 s per
    epoch here instead of 0.15 s at 1,024."""
    return max(config.batch_size, 1024)


def _best_row(history, monitor, mode):
    rows = [r for r in history if isinstance(r.get(monitor), float) and not math.isnan(r[monitor])]
    if not rows:
        return None
    pick = min if mode == "min" else max
    return pick(rows, key=lambda r: r[monitor])


def _finish(module, config, data, model, run_dir):
    from dlref import reports
    from dlref.callbacks import read_history

    best_path = run_dir / "checkpoints" / "best.keras"
    if best_path.is_file():
        model.load_weights(best_path)
    if hasattr(module, "calibrate"):
        data.meta.update(module.calibrate(model, data, config))
    result = module.evaluate(model, data)
    if hasattr(module, "score") and len(data.train[1]):
        for metric, value in classical_scores(module, data, config.seed).items():
            result["metrics"][metric]["classical"] = value
    io.save_model(model, run_dir / "model.keras")
    io.write_json(run_dir / "artifacts" / "meta.json", data.meta)
    io.write_json(run_dir / "metrics.json", {"split": "test", "rows": int(len(data.test[1])),
                                             **result})
    figures = {"learning_curves": reports.learning_curves(read_history(run_dir / "history.csv"),
                                                           module.MONITOR)}
    figures.update(module.plots(model, data) if hasattr(module, "plots") else {})
    texts = {"test_metrics": reports.metrics_table(result["metrics"]),
             **({"report": result["report"]} if result.get("report") else {})}
    reports.save_figures(figures, run_dir, texts)
    shutil.rmtree(run_dir / "checkpoints" / "backup", ignore_errors=True)
    headline = next(iter(result["metrics"]))
    runs.update_manifest(
        run_dir, status="completed", error=None,
        test={"metric": headline, "value": result["metrics"][headline]["model"]},
        metrics=result["metrics"],
    )
    _print_summary(run_dir, result)


def classical_scores(module, data, seed):
    """The recipe's test metrics for HistGradientBoosting fitted on the same training split.

    It decides at 0.5: the threshold tuned on the network's validation scores says nothing
    about HistGradientBoosting's.
    """
    from dlref import reports

    outputs = reports.classical_outputs(data, seed)
    return module.score(data.test[1], outputs, {**data.meta, "threshold": 0.5})


def _stopped(run_dir, status, reason):
    from dlref.callbacks import read_history

    epochs = len(read_history(run_dir / "history.csv"))
    runs.update_manifest(run_dir, status=status, error=reason, epochs_completed=epochs)
    if status == "interrupted":
        print(f"\nRun {status} ({reason}). Best and last checkpoints are in {run_dir}/checkpoints."
              f"\nResume with:  dlref train --resume {run_dir}", file=sys.stderr)
    return run_dir


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
    """Loads a local .keras file in Keras safe mode (no arbitrary code from lambdas)."""
    import keras

    path = Path(path)
    if path.suffix != ".keras" or not path.is_file():
        raise DlrefError(f"No model file at {path} (expected a local .keras file).")
    return keras.saving.load_model(str(path), safe_mode=True)


def open_run(ref, runs_dir=None):
    """(run folder, manifest, recipe module, model, meta) of a completed run."""
    run_dir = runs.find_run(ref, runs.runs_root(runs_dir))
    manifest = runs.read_manifest(run_dir)
    if not (run_dir / "model.keras").is_file():
        raise DlrefError(
            f"{run_dir} has no model.keras (status: {manifest.get('status')}). "
            f"Finish it first: dlref train --resume {run_dir}"
        )
    module = registry.load(manifest["recipe"])
    meta = io.read_json(run_dir / "artifacts" / "meta.json")
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
