"""The dlref command line. Every heavy import happens inside the command that needs it, so that
`dlref --help`, `list`, `show` and `runs` answer without loading TensorFlow."""

import functools
import json
import os
import sys

# Before TensorFlow is first imported anywhere: hide its C++ log noise (cuInit on a machine
# with no GPU, oneDNN notices). A user who sets the variable keeps their value.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import typer  # noqa: E402

from dlref import backend, registry, runs  # noqa: E402
from dlref.errors import DlrefError  # noqa: E402

app = typer.Typer(
    help="Recipes from Deep Learning Quick Reference (Bernico) for your own data.\n\n"
    "Examples:\n\n"
    "  dlref list\n\n"
    "  dlref train regression\n\n"
    "  dlref train binary --data churn.csv --target churned\n\n"
    "  dlref runs\n\n"
    "  dlref tensorboard",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

RunsDir = typer.Option(None, "--runs-dir",
                       help="Root of run folders (env DLREF_RUNS_DIR; default ./runs).")
AsJson = typer.Option(False, "--json", help="Machine-readable output.")
# Options that train and tune share: the data source and the config layers.
DataPath = typer.Option(None, "--data", help="Your data: a CSV, Parquet or spreadsheet (.xlsx, "
                        ".xls, .ods) file with a header (images: a folder with one sub-folder "
                        "per class).")
ValData = typer.Option(None, "--val-data", help="A pre-split validation file (same columns as "
                       "--data; images: a folder of the same classes), used as given.")
TestData = typer.Option(None, "--test-data", help="A pre-split test file (same columns as "
                        "--data; images: a folder of the same classes), used as given.")
Missing = typer.Option(None, "--missing", help="Gaps in the features: impute (training median + "
                       "<column>_missing; text: a (missing) category), drop (the rows) or error "
                       "(default impute).")
DropColumns = typer.Option([], "--drop", help="Leave this column out (repeatable).")
Features = typer.Option(None, "--features", help="Use only these columns: COL,COL,...")
MaxCategories = typer.Option(None, "--max-categories", help="A text column keeps its N most "
                             "frequent values, the rest become (other) (default 50).")
Target = typer.Option(None, "--target", help="Column to predict (--data).")
DateColumn = typer.Option(None, "--date-column", help="timeseries: the column with each row's "
                          "date or time (without it, rows are steps in file order).")
TextColumn = typer.Option(None, "--text-column", help="text: the column holding each row's "
                          "text (default: the column with the longest texts).")
Embeddings = typer.Option(None, "--embeddings", help="text: pretrained word vectors, a "
                          "GloVe-format text file (word v1 v2 ...).")
PositiveClass = typer.Option(None, "--positive-class",
                             help="binary: one-vs-rest on this target value.")
Dataset = typer.Option(None, "--dataset", help="A named dataset, e.g. mnist (downloads once).")
SetItems = typer.Option([], "--set", help="Override: key=value (repeatable).")
Seed = typer.Option(None, "--seed", help="Shortcut for --set seed=N.")
RunName = typer.Option(None, "--name", help="Suffix for the run folder.")
Base = typer.Option(None, "--base", help="transfer: the pretrained network, mobilenet_v2 "
                    "(default), inception_v3 (the book's), resnet50 or efficientnet_b0.")
Env = typer.Option(None, "--env", help="dqn: a gymnasium env id with discrete actions, e.g. "
                   "CartPole-v1 (default), LunarLander-v3, ALE/Breakout-v5.")
Steps = typer.Option(None, "--steps", help="dqn: environment steps to train (with --resume: "
                     "the new total).")
Backend = typer.Option(None, "--backend", help="Keras backend: tensorflow or jax (default: the "
                       "run's own, else $KERAS_BACKEND, else the recipe's; see dlref list).")
Weights = typer.Option(None, "--weights", help="transfer: imagenet (default; downloads once), "
                       "none, a .keras image model, or a run (folder or --name) whose "
                       "model.keras to start from, e.g. a cnn run.")


def user_errors(command):
    """Turns DlrefError into 'Error: ...' on stderr and exit code 2, with no traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except DlrefError as error:
            typer.echo(f"Error: {error}", err=True)
            raise typer.Exit(2) from None

    return wrapper


@app.command("list")
@user_errors
def list_recipes(as_json: bool = AsJson):
    """List recipes (with their chapter) and presets."""
    recipes = [{"name": name, **registry.info(name)} for name in registry.RECIPES]
    presets = [{"name": name, "recipe": doc["recipe"], "summary": doc.get("summary", "")}
               for name, doc in registry.presets().items()]
    if as_json:
        typer.echo(json.dumps({"recipes": recipes, "presets": presets}, indent=2))
        return
    typer.echo("Recipes (chapter, Keras backend: train / tune):")
    for item in recipes:
        tunable = "" if item["tunable"] else "  (not tunable)"
        typer.echo(f"  {item['name']:<12} ch {item['chapter']:>2}  {_backends(item):<17} "
                   f"{item['summary']}{tunable}")
    typer.echo("\nPresets (dlref train PRESET):")
    for item in presets:
        typer.echo(f"  {item['name']:<24} {item['summary']}")


def _backends(item):
    """A recipe's default backends, as `dlref list` shows them."""
    if item.get("engine"):
        return item["engine"]
    train = registry.default_backend(item["name"])
    tune = registry.default_backend(item["name"], "tune") if item["tunable"] else train
    return train if tune == train else f"{train} / {tune}"


@app.command()
@user_errors
def show(
    name: str | None = typer.Argument(None, help="Recipe or preset (default: the --config "
                                      "file's recipe)."),
    config: str | None = typer.Option(None, "--config", help="TOML config file to apply."),
    set_: list[str] = SetItems,
    as_json: bool = AsJson,
):
    """Print the resolved config of a recipe or preset, with what each key means.

    Example: dlref show multiclass-dropout --set epochs=5
    """
    from dlref import config as configlib
    from dlref.data import Source
    from dlref.training import resolve_config

    document = configlib.read_toml(config) if config else {}
    name = name or document.get("recipe")
    if name is None:
        raise DlrefError("Name a recipe or preset (dlref list shows them), or give --config FILE.")
    recipe, preset, values = resolve_config(name, config, set_)
    recorded = configlib.data_table(document, config) if config else {}
    if as_json:
        typer.echo(json.dumps({"recipe": recipe, "preset": preset, "config": values,
                               **({"data": recorded} if recorded else {})}, indent=2))
        return
    info = registry.info(recipe)
    typer.echo(f"# {info['title']}\n# recipe {recipe}, chapter {info['chapter']}"
               + (f", preset {preset}" if preset else "")
               + f"; best checkpoint by {info['monitor']} ({info['mode']})")
    fields = {key: (default, comment) for key, default, comment in registry.config_fields(recipe)}
    lines = [(f"{key} = {_toml_value(value)}", key, value) for key, value in values.items()]
    width = max(len(line) for line, _, _ in lines)
    for line, key, value in lines:
        default, comment = fields[key]
        changed = f"(default {_toml_value(default)}) " if value != default else ""
        typer.echo(f"{line:<{width}}  # {changed}{comment}")
    if recorded:
        typer.echo(f"# data (from [data]): {Source.from_dict(recorded).describe()}")


def _source(data, dataset, target, positive_class, val_data=None, test_data=None, missing=None,
            drop=(), features=None, max_categories=None, date_column=None, text_column=None,
            embeddings=None):
    from dlref.data import Source

    if data and dataset:
        raise DlrefError("Give --data or --dataset, not both.")
    if (val_data or test_data) and not data:
        raise DlrefError("--val-data and --test-data go with --data (the training file).")
    # Absolute paths: a resume, or a tuned config, may be used from another folder.
    data, val_data, test_data, embeddings = (os.path.abspath(p) if p else None
                                             for p in (data, val_data, test_data, embeddings))
    chosen = None
    if features is not None:
        chosen = tuple(c.strip() for c in features.split(",") if c.strip())
        if not chosen:
            raise DlrefError("--features needs column names: --features COL,COL,...")
    return Source(data=data, dataset=dataset, target=target, positive_class=positive_class,
                  val_data=val_data, test_data=test_data, missing=missing, drop=tuple(drop),
                  features=chosen, max_categories=max_categories, date_column=date_column,
                  text_column=text_column, embeddings=embeddings)


def _toml_value(value):
    return json.dumps(list(value) if isinstance(value, tuple) else value)


@app.command()
@user_errors
def train(
    name: str | None = typer.Argument(None, help="Recipe or preset (see dlref list); with "
                                      "--data and --target alone, chosen from the target."),
    data: str | None = DataPath,
    target: str | None = Target,
    positive_class: str | None = PositiveClass,
    dataset: str | None = Dataset,
    val_data: str | None = ValData,
    test_data: str | None = TestData,
    missing: str | None = Missing,
    drop: list[str] = DropColumns,
    features: str | None = Features,
    max_categories: int | None = MaxCategories,
    date_column: str | None = DateColumn,
    text_column: str | None = TextColumn,
    embeddings: str | None = Embeddings,
    base: str | None = Base,
    weights: str | None = Weights,
    env: str | None = Env,
    steps: int | None = Steps,
    config: str | None = typer.Option(None, "--config", help="TOML config (e.g. config.toml "
                                         "of an earlier run, or best.toml of a tuning run)."),
    set_: list[str] = SetItems,
    epochs: int | None = typer.Option(None, "--epochs", help="Shortcut for --set epochs=N."),
    seed: int | None = Seed,
    run_name: str | None = RunName,
    runs_dir: str | None = RunsDir,
    resume: str | None = typer.Option(None, "--resume", help="Continue an interrupted run."),
    strategy: str = typer.Option("default", "--strategy",
                                 help="default; mirrored (every local GPU, batch split); "
                                 "multi-worker (the processes TF_CONFIG lists; see README)."),
    backend_name: str | None = Backend,
):
    """Train a recipe into a new run folder (or --resume an interrupted one).

    Examples:

      dlref train regression

      dlref train --data titanic.csv --target survived

      dlref train binary --data churn.csv --target churned --drop customer_id --epochs 30

      dlref train regression --data train.csv --test-data test.csv --target price

      dlref train multiclass-dropout --set learning_rate=0.0005

      dlref train text --data reviews.csv --target sentiment --text-column review

      dlref train seq2seq --data fra.txt

      dlref train cnn-augmented --data photos/

      dlref train transfer --data photos/ --base inception_v3

      dlref train dqn --env LunarLander-v3 --steps 100000

      dlref train --config runs/binary/tune-20261123-101500-a1b2/best.toml

      dlref train --resume runs/binary/20261123-101500-a1b2
    """
    from dlref import training

    backend.request(backend_name)
    if resume:
        _refuse_with_resume(data=data, target=target, positive_class=positive_class,
                            dataset=dataset, val_data=val_data, test_data=test_data,
                            missing=missing, drop=drop, features=features,
                            max_categories=max_categories, date_column=date_column,
                            text_column=text_column, embeddings=embeddings,
                            config=config, set=set_, seed=seed, base=base, weights=weights,
                            env=env, name_=run_name, strategy=strategy != "default",
                            backend=backend_name)
        run_dir = training.resume(resume, runs_dir=runs_dir, epochs=epochs, name=name,
                                  steps=steps)
    else:
        source = _source(data, dataset, target, positive_class, val_data, test_data, missing,
                         drop, features, max_categories, date_column, text_column,
                         embeddings)
        run_dir = training.train(name, source=source, config_file=config, overrides=set_,
                                 epochs=epochs, seed=seed, run_name=run_name, runs_dir=runs_dir,
                                 strategy=strategy, argv=sys.argv,
                                 shortcuts=_shortcuts(base, weights, runs_dir, env, steps))
    if run_dir is None:
        return  # A multi-worker run's worker: the chief writes the run folder.
    if runs.read_manifest(run_dir)["status"] != "completed":
        raise typer.Exit(130)


def _shortcuts(base, weights, runs_dir=None, env=None, steps=None):
    """--base and --weights as config values. --weights names a .keras file, or a run (its
    folder or --name) whose model.keras is meant; either becomes an absolute path, so that the
    run's config.toml works from any folder."""
    from pathlib import Path

    if weights and weights.lower() in ("imagenet", "none"):
        weights = weights.lower()
    elif weights:
        if not Path(weights).is_file() and Path(weights).suffix != ".keras":
            weights = str(runs.find_run(weights, runs.runs_root(runs_dir)) / "model.keras")
        weights = os.path.abspath(weights)
    return {"base": base, "weights": weights, "env": env, "steps": steps}


def _refuse_with_resume(**given):
    """--resume continues a run with its own settings: any other option would be ignored."""
    if given.get("env"):
        raise DlrefError("--resume continues a run in the env it started in, so --env cannot "
                         "apply.")
    if given.get("backend"):
        raise DlrefError("--resume continues a run on the Keras backend it started on (its "
                         "epochs must repeat an uninterrupted run's), so --backend cannot apply.")
    flags = {"name_": "--name", "set": "--set",
             "date_column": "--date-column", "text_column": "--text-column",
             "positive_class": "--positive-class", "val_data": "--val-data",
             "test_data": "--test-data", "max_categories": "--max-categories"}
    named = [flags.get(key, f"--{key}") for key, value in given.items()
             if value is not None and value is not False and value not in ([], ())]
    if named:
        raise DlrefError(
            f"--resume continues a run with the settings it started with, so {', '.join(named)} "
            "cannot apply. Only --epochs (a new total) and --runs-dir go with --resume; for "
            "other settings start a new run, e.g. dlref train --config RUN/config.toml "
            "--set key=value.")


@app.command()
@user_errors
def tune(
    name: str | None = typer.Argument(None, help="Recipe or preset with a search space."),
    algorithm: str | None = typer.Option(
        None, "--algorithm", help="hyperband (default), random or bayesian."),
    objective: str | None = typer.Option(
        None, "--objective", help="Metric to optimize, NAME or NAME:min|max (default: the "
        "recipe's monitor, e.g. val_loss)."),
    max_epochs: int | None = typer.Option(
        None, "--max-epochs", help="Hyperband: most epochs of one model; random, bayesian: "
        "epochs of every trial (default: the config's epochs)."),
    factor: int | None = typer.Option(
        None, "--factor", help="Hyperband: keep the best 1/FACTOR each round (default 3)."),
    iterations: int | None = typer.Option(
        None, "--iterations", help="Hyperband: sweeps over all its brackets (default 1)."),
    max_trials: int | None = typer.Option(
        None, "--max-trials", help="random, bayesian: number of trials (default 10)."),
    data: str | None = DataPath,
    target: str | None = Target,
    positive_class: str | None = PositiveClass,
    dataset: str | None = Dataset,
    val_data: str | None = ValData,
    test_data: str | None = TestData,
    missing: str | None = Missing,
    drop: list[str] = DropColumns,
    features: str | None = Features,
    max_categories: int | None = MaxCategories,
    date_column: str | None = DateColumn,
    text_column: str | None = TextColumn,
    embeddings: str | None = Embeddings,
    base: str | None = Base,
    weights: str | None = Weights,
    train_best: bool = typer.Option(False, "--train-best", help="After the search, train the "
                                    "best config into a normal run folder."),
    config: str | None = typer.Option(None, "--config", help="TOML config: the base of "
                                         "every trial (search_space overrides its keys)."),
    set_: list[str] = SetItems,
    seed: int | None = Seed,
    run_name: str | None = RunName,
    runs_dir: str | None = RunsDir,
    resume: str | None = typer.Option(None, "--resume", help="Continue a stopped search."),
    role: str | None = typer.Option(
        None, "--role", help="Distributed search: chief (serves the oracle) or worker."),
    oracle: str | None = typer.Option(
        None, "--oracle", help="HOST:PORT of the chief's oracle, e.g. 127.0.0.1:8000."),
    worker_id: str | None = typer.Option(
        None, "--worker-id", help="Worker name, unique in the search (e.g. w0)."),
    allow_remote: bool = typer.Option(
        False, "--allow-remote", help="Chief: listen on a non-loopback address (the oracle "
        "has no authentication)."),
    connect_timeout: float = typer.Option(
        60.0, "--connect-timeout", help="Worker: seconds to wait for the chief."),
    backend_name: str | None = Backend,
):
    """Search a recipe's hyperparameters with keras-tuner into a tune-... run folder.

    Prints its budget (trials, epochs) first.

    Writes trials.csv, best.toml (for dlref train --config) and TensorBoard HParams logs.

    Examples:

      dlref tune regression --max-epochs 9

      dlref tune binary --data churn.csv --target churned --algorithm random --max-trials 20

      dlref tune binary --data churn.csv --target churned --train-best

      dlref tune --resume runs/binary/tune-20261123-101500-a1b2

      dlref tune multiclass --max-epochs 9 --role chief --oracle 127.0.0.1:8000

      dlref tune multiclass --max-epochs 9 --role worker --oracle 127.0.0.1:8000 --worker-id w0
    """
    from dlref import tuning

    backend.request(backend_name)
    source = _source(data, dataset, target, positive_class, val_data, test_data, missing, drop,
                      features, max_categories, date_column, text_column, embeddings)
    search = tuning.Search(algorithm=algorithm, objective=objective, max_epochs=max_epochs,
                           factor=factor, iterations=iterations, max_trials=max_trials)
    cluster = tuning.Cluster(role=role, oracle=oracle, worker_id=worker_id,
                             allow_remote=allow_remote, connect_timeout=connect_timeout)
    options = dict(source=source, config_file=config, overrides=set_, seed=seed, search=search,
                   cluster=cluster, runs_dir=runs_dir, argv=sys.argv)
    if train_best and role == "worker":
        raise DlrefError("--train-best goes with the chief (or a single process), not a worker.")
    if resume:
        if base or weights:
            raise DlrefError("--base and --weights cannot change a search; --resume continues "
                             "it as it started.")
        run_dir = tuning.resume(resume, name=name, **options)
    else:
        run_dir = tuning.tune(name, run_name=run_name,
                              shortcuts=_shortcuts(base, weights, runs_dir), **options)
    if run_dir is None or (role != "worker"
                           and runs.read_manifest(run_dir)["status"] != "completed"):
        raise typer.Exit(130)
    if train_best:
        from dlref import training

        recipe = runs.read_manifest(run_dir)["recipe"]
        print(f"\nTraining the best config (--train-best): dlref train {recipe} --config "
              f"{run_dir / 'best.toml'}\n", flush=True)
        trained = training.train(recipe, config_file=str(run_dir / "best.toml"),
                                 runs_dir=runs_dir, argv=sys.argv)
        if runs.read_manifest(trained)["status"] != "completed":
            raise typer.Exit(130)


@app.command()
@user_errors
def evaluate(
    run: str = typer.Argument(..., help="Run folder, or its name under the runs root."),
    data: str | None = typer.Option(None, "--data", help="A labelled CSV to evaluate on "
                                       "(default: the run's own test split)."),
    episodes: int | None = typer.Option(None, "--episodes", help="dqn: test episodes to play "
                                        "(default: the run's eval_episodes)."),
    record: bool = typer.Option(False, "--record", help="dqn: also save an animated GIF of "
                                "one episode in the run's plots/."),
    runs_dir: str | None = RunsDir,
    as_json: bool = AsJson,
    backend_name: str | None = Backend,
):
    """Reload a run's model and print its test metrics beside the baselines.

    Examples:

      dlref evaluate runs/binary/20261123-101500-a1b2 --data holdout.csv

      dlref evaluate runs/dqn/20261127-101500-a1b2 --episodes 50 --record
    """
    from dlref import reports, saved

    backend.request(backend_name)
    run_dir = runs.find_run(run, runs.runs_root(runs_dir))
    manifest = runs.read_manifest(run_dir)
    if registry.own_process(manifest.get("recipe", "")):
        if backend_name:
            raise DlrefError("--backend does not apply to a dqn run: keras-rl2 runs on legacy "
                             "Keras, which is TensorFlow's.")
        if data:
            raise DlrefError("A dqn run is evaluated by playing its env: --episodes N "
                             "(and --record), not --data.")
        from dlref.rl import runner

        result = runner.evaluate(run_dir, manifest, episodes, record)
        if as_json:
            typer.echo(json.dumps(result, indent=2))
            return
        typer.echo(f"{run_dir}  ({manifest['env']}, {result['episodes']} episodes)\n")
        typer.echo(reports.metrics_table(result["metrics"]) + runner.recorded(result))
        return
    if episodes is not None or record:
        raise DlrefError(f"--episodes and --record go with dqn runs; {run_dir.name} is a "
                         f"{manifest.get('recipe')} run.")
    run_dir, result = saved.evaluate_run(run, runs_dir=runs_dir, data_path=data)
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    typer.echo(f"{run_dir}  ({data or 'its test split'})\n")
    typer.echo(reports.metrics_table(result["metrics"]))
    if result.get("report"):
        typer.echo("\n" + result["report"].rstrip())


@app.command()
@user_errors
def predict(
    run: str = typer.Argument(..., help="Run folder, or its name under the runs root."),
    data: str | None = typer.Option(None, "--data", help="CSV of new rows (target column "
                                    "optional); timeseries: the history to forecast from "
                                    "(target required); seq2seq: a file with one input per "
                                    "line; cnn, transfer: an image or a folder of images."),
    text: list[str] = typer.Option([], "--text", help="text, seq2seq: an input given on the "
                                   "command line (repeatable); predictions go to stdout."),
    output: str | None = typer.Option(None, "--output", help="Where to write predictions "
                                         "(default: DATA with .predictions.csv; - for "
                                         "standard output)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    horizon: int | None = typer.Option(None, "--horizon", help="timeseries: forecast this "
                                       "many steps after the file's last row (default 1)."),
    samples: int | None = typer.Option(None, "--samples", help="gan: write N generated images "
                                       "(PNG files and grid.png) into --output (default "
                                       "RUN/samples)."),
    seed: int | None = typer.Option(None, "--seed", help="gan: the noise of --samples "
                                    "(default: the run's seed)."),
    runs_dir: str | None = RunsDir,
    backend_name: str | None = Backend,
):
    """Write predictions (and class probabilities) for new rows to a CSV.

    Examples:

      dlref predict runs/binary/20261123-101500-a1b2 --data new.csv

      dlref predict runs/text/20261127-101500-a1b2 --text "A gripping, funny film."

      dlref predict runs/cnn/20261127-101500-a1b2 --data photos/

      dlref predict runs/gan/20261127-101500-a1b2 --samples 64
    """
    from dlref import saved
    from dlref.text import plural

    backend.request(backend_name)
    if samples is not None:
        if data or text or horizon:
            raise DlrefError("--samples makes new images: it takes no --data, --text or "
                             "--horizon.")
        folder, written = saved.sample_run(run, samples, output, runs_dir=runs_dir,
                                           overwrite=overwrite, seed=seed)
        typer.echo(f"Wrote {plural(samples, 'image')} and a grid ({len(written)} files) to "
                   f"{folder}")
        return
    if seed is not None:
        raise DlrefError("--seed goes with --samples (a gan run's generated images).")

    if bool(data) == bool(text):
        raise DlrefError("Give --data FILE, or --text \"...\" (text and seq2seq runs), "
                         "not both." if data else "Give --data FILE (or --text \"...\" for "
                         "a text or seq2seq run).")
    if text:
        if output or overwrite:
            raise DlrefError("--output and --overwrite go with --data: predictions for --text "
                             "are printed.")
        frame = saved.predict_text(run, list(text), runs_dir=runs_dir)
        typer.echo(frame.to_csv(index=False).rstrip("\n"))
        return
    path, count = saved.predict_run(run, data, output, runs_dir=runs_dir, overwrite=overwrite,
                                    horizon=horizon)
    typer.echo(f"Wrote {plural(count, 'prediction')} to "
               + ("standard output" if path == "-" else str(path)), err=path == "-")


@app.command("runs")
@user_errors
def list_runs(
    recipe: str | None = typer.Argument(None, help="Only this recipe's runs."),
    runs_dir: str | None = RunsDir,
    as_json: bool = AsJson,
):
    """List runs: recipe, run, data, status, epochs, monitored metric, test metric, when.

    --json gives each run's whole manifest, with its full data source under "source".
    """
    root = runs.runs_root(runs_dir)
    found = runs.list_runs(root, recipe)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    if not found:
        typer.echo(f"No runs under {root}/. Start one: dlref train regression")
        return
    rows = [("recipe", "run", "data", "status", "epochs", "monitored", "test", "when")]
    rows += [_run_row(manifest) for manifest in found]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        typer.echo("  ".join(cells).rstrip())


def _run_row(manifest):
    from dlref.data import Source

    best, test = manifest.get("best") or {}, manifest.get("test") or {}
    monitor = manifest.get("monitor", "")
    monitored = f"{monitor} {best['value']:.4f}" if best.get("value") is not None else "-"
    tested = f"{test['metric']} {test['value']:.4f}" if test.get("value") is not None else "-"
    when = manifest.get("created", "")[:16].replace("T", " ")
    data = manifest.get("env") or Source.from_dict(manifest.get("source")).short()
    done = str(manifest.get("epochs_completed", "-"))
    if "steps_completed" in manifest:  # dqn counts environment steps.
        done = f"{manifest['steps_completed']:,} steps"
    return (manifest.get("recipe", "?"), manifest.get("run", "?"), data,
            manifest.get("status", "?"), done, monitored, tested, when)


@app.command()
@user_errors
def tensorboard(
    logdir: str | None = typer.Argument(None, help="Folder of runs (default: the runs root)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind."),
    port: int = typer.Option(6006, "--port"),
):
    """Start TensorBoard on the runs (bound to 127.0.0.1 unless --host says otherwise).

    Example: dlref tensorboard runs/binary
    """
    from dlref import processes

    logdir = logdir or str(runs.runs_root())
    if not os.path.isdir(logdir):
        raise DlrefError(f"No folder {logdir}: train something first (dlref train regression).")
    if host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"Warning: TensorBoard has no authentication; anyone who can reach "
                   f"{host}:{port} can read these runs.", err=True)
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", logdir,
               "--host", host, "--port", str(port)]
    typer.echo(f"TensorBoard on http://{host}:{port}/  (Ctrl-C to stop)")
    raise typer.Exit(processes.run_child(command))


if __name__ == "__main__":
    app()
