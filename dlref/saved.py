"""A finished run: what training leaves (the model with its artifacts, test metrics beside the
baselines, plots and their TensorBoard copies), and the same run reloaded to evaluate and
predict (Keras safe mode, local files only)."""

import shutil
import sys
from pathlib import Path

from dlref import config as configlib
from dlref import io, registry, runs
from dlref.errors import DlrefError


def finish(module, config, data, model, run_dir):
    from dlref.resumable import best_row, read_history

    history = read_history(run_dir / "history.csv")
    best_path = run_dir / "checkpoints" / "best.keras"
    kept = best_row(history, module.MONITOR, module.MODE) if best_path.is_file() else None
    kept = kept or (history[-1] if history else None)  # Without best.keras: the last epoch.
    if best_path.is_file():
        import warnings

        with warnings.catch_warnings():
            # A staged run's best epoch may come from a stage with another optimizer, whose
            # state is not needed any more.
            warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
            model.load_weights(best_path)
    if hasattr(module, "final_model"):
        # The model to evaluate and save, built from the trained one: e.g. a stateful LSTM's
        # stateless copy, which forecasts at any batch size.
        model = module.final_model(model, config, data)
    if hasattr(module, "calibrate"):
        data.meta.update(module.calibrate(model, data, config))
    result = module.evaluate(model, data)
    classical = None
    if hasattr(module, "score") and len(data.train[1]):
        # Fitted once, then scored and drawn (the binary ROC curve) from the same outputs.
        classical = _classical_outputs(module, data, config.seed)  # None: turned off.
        column = getattr(module, "CLASSICAL_COLUMN", "classical")  # transfer: "scratch"
        scores = classical_scores(module, data, outputs=classical) if classical is not None else {}
        for metric, value in scores.items():
            result["metrics"][metric][column] = value
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
    _print_summary(run_dir, result, getattr(module, "BASELINES", None))


def _save_reports(module, data, model, run_dir, result, history, kept, classical):
    """Plots (PNG and TensorBoard images), the metrics as text and test scalars in logs/test.

    Args:
        kept: the history row of the epoch the saved model comes from, or None.
        classical: the classical baseline's test outputs, or None.
    """
    from dlref import reports

    loss = module.loss_label(data.meta) if hasattr(module, "loss_label") else "loss"
    kept_epoch = kept["epoch"] + 1 if kept else None
    best = (run_dir / "checkpoints" / "best.keras").is_file()
    why = None if best else f"the last: no {module.MONITOR} value to compare"
    figures = {"learning_curves": reports.learning_curves(history, module.MONITOR, loss,
                                                          kept_epoch, why)}
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
    if outputs is None:
        outputs = _classical_outputs(module, data, seed)
    return module.score(data.test[1], outputs, {**data.meta, "threshold": 0.5})


def _classical_outputs(module, data, seed):
    """The recipe's classical baseline (text: TF-IDF + logistic regression), else
    HistGradientBoosting on the table."""
    from dlref import reports

    if hasattr(module, "classical_outputs"):
        return module.classical_outputs(data, seed)
    return reports.classical_outputs(data, seed)


def _print_summary(run_dir, result, baselines=None):
    from dlref import reports

    baselines = baselines or "trivial = constant predictor; classical = HistGradientBoosting"
    print(f"\nTest metrics ({baselines}):")
    print(reports.metrics_table(result["metrics"]))
    if result.get("report"):
        print("\n" + result["report"].rstrip())
    root = run_dir.parent.parent
    print(f"\nRun:          {run_dir}\nTensorBoard:  dlref tensorboard {root}"
          f"   (or: tensorboard --logdir {root})")


def load_model(path):
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
            refused = _unsafe(config)
            lines = [line for line in str(error).splitlines() if line.strip()]
            why = (f"refused by Keras safe mode: {refused}" if refused else
                   f"Keras cannot read it ({lines[-1] if lines else type(error).__name__})")
    raise DlrefError(f"Cannot load {path}: {why}. dlref only loads models it saved; if dlref "
                     "saved this one, it was changed or damaged since: train the run again.")


def _unsafe(node):
    """What Keras safe mode refuses in a model's config.json, said for a user, or None."""
    if isinstance(node, list):
        return next(filter(None, map(_unsafe, node)), None)
    if not isinstance(node, dict):
        return None
    if node.get("class_name") == "Lambda":
        return "it contains a Lambda layer, which could run arbitrary code"
    module = str(node.get("module", ""))
    if node.get("class_name") == "function" and module.split(".")[0] != "keras":
        return f"its config names the function {module}.{node.get('config')}, outside Keras"
    return _unsafe(list(node.values()))


def open_run(ref, runs_dir=None):
    """(run folder, manifest, recipe module, model, meta) of a completed run.

    find_run refuses a run reached through a symbolic link or holding one, so model.keras and
    artifacts/meta.json are the run's own files.
    """
    run_dir = runs.find_run(ref, runs.runs_root(runs_dir))
    manifest = runs.read_manifest(run_dir)
    if registry.own_process(manifest.get("recipe", "")):
        raise DlrefError(f"{run_dir.name} is a dqn run: its agent acts in its env rather than "
                         f"predicting from data. Watch it play: dlref evaluate {run_dir} "
                         "--episodes 10 --record")
    if not (run_dir / "model.keras").is_file():
        raise DlrefError(
            f"{run_dir} has no model.keras (status: {manifest.get('status')}). "
            f"Finish it first: dlref train --resume {run_dir}"
        )
    module = registry.load(manifest["recipe"], manifest.get("backend"))
    meta_path = run_dir / "artifacts" / "meta.json"
    try:
        meta = io.read_json(meta_path)
    except (OSError, ValueError) as error:
        raise DlrefError(f"Cannot read {meta_path} ({error}): predictions need it (the scaler, "
                         "the labels). Train the run again.") from None
    return run_dir, manifest, module, load_model(run_dir / "model.keras"), meta


def evaluate_run(ref, runs_dir=None, data_path=None):
    """Test metrics of a saved model: on its own test split, or on a labelled file."""
    from dlref import training

    run_dir, manifest, module, model, meta = open_run(ref, runs_dir)
    if data_path:
        data = module.load_labelled(data_path, meta)
    else:
        defaults = configlib.field_defaults(module.Config)
        config = module.Config(**configlib.merge(defaults, [("run.json", manifest["config"])]))
        # Another test split (or encoding of the inputs) than the model saw would mislead.
        data = training.rebuild_data(module, config, manifest, (
            f"The data of {run_dir.name} changed since it was trained, or an earlier version of "
            "dlref prepared it, so its test split cannot be rebuilt. Evaluate it on a labelled "
            "file instead: dlref evaluate RUN --data FILE"))
        data.meta = meta
    result = module.evaluate(model, data)
    # The baselines fitted when the run finished (classical, scratch) are not fitted again.
    saved = io.read_json(run_dir / "metrics.json") if not data_path else {}
    for metric, row in result["metrics"].items():
        for column, value in saved.get("metrics", {}).get(metric, {}).items():
            row.setdefault(column, value)
    return run_dir, result


def predict_run(ref, data_path, output=None, runs_dir=None, overwrite=False, horizon=None):
    """Writes predictions for a CSV of new rows (a forecast after a series' history, for
    timeseries); returns the output path and row count."""
    import inspect

    _, manifest, module, model, meta = open_run(ref, runs_dir)
    options = {"horizon": horizon} if horizon is not None else {}
    if options and "horizon" not in inspect.signature(module.predict).parameters:
        raise DlrefError(f"--horizon goes with the timeseries recipe; {ref} is a "
                         f"{manifest['recipe']} run.")
    if output != "-":  # "-": standard output, for a pipe; notes and warnings go to stderr.
        output = Path(output) if output else Path(data_path).with_suffix(".predictions.csv")
        if output.exists() and not overwrite:
            raise DlrefError(f"{output} exists; choose another --output or pass --overwrite.")
    frame = module.predict(model, meta, data_path, **options)
    if output == "-":
        frame.to_csv(sys.stdout, index=False)
        return output, len(frame)
    with io.atomic_path(output, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False)
    return output, len(frame)


def predict_text(ref, texts, runs_dir=None):
    """Predictions for inputs given on the command line (--text), as a table to print."""
    import inspect

    _, manifest, module, model, meta = open_run(ref, runs_dir)
    if "text" not in inspect.signature(module.predict).parameters:
        raise DlrefError(f"--text goes with the text and seq2seq recipes; {ref} is a "
                         f"{manifest['recipe']} run, which predicts from --data FILE.")
    return module.predict(model, meta, None, text=texts)


def sample_run(ref, count, output=None, runs_dir=None, overwrite=False, seed=None):
    """Writes `count` images made by a generative run's model (PNG files and a grid) into the
    folder `output` (default: RUN/samples); returns the folder and the files written."""
    run_dir, manifest, module, model, meta = open_run(ref, runs_dir)
    if not hasattr(module, "sample"):
        raise DlrefError(f"--samples goes with the gan recipe; {ref} is a {manifest['recipe']} "
                         "run, which predicts from --data.")
    if count < 1:
        raise DlrefError(f"--samples must be at least 1, got {count}.")
    output = Path(output) if output else run_dir / "samples"
    if output.exists() and not output.is_dir():
        raise DlrefError(f"{output} is a file; --output for --samples names a folder.")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise DlrefError(f"{output} is not empty; choose another --output or pass --overwrite.")
    seed = manifest["config"].get("seed", 0) if seed is None else seed
    return output, module.sample(model, meta, count, output, seed)
