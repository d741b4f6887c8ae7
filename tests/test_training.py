"""Every registered recipe and every preset trains one epoch into a complete run folder."""

import tomllib

import pytest

import helpers
from dlref import backend, registry, resumable

# The DQN trains in its own process, counts steps, not epochs, and has its own tests
# (test_dqn.py).
RECIPES = sorted(r for r in registry.RECIPES if not registry.own_process(r))
PRESETS = {name: document for name, document in registry.presets().items()
           if not registry.own_process(document["recipe"])}


def _check_run_folder(run_dir, recipe):
    """The layout of DESIGN.md section 4, each file with content that makes sense."""
    manifest = helpers.read_json(run_dir / "run.json")
    assert manifest["status"] == "completed", manifest.get("error")
    assert manifest["recipe"] == recipe and manifest["kind"] == "train"
    assert manifest["epochs_completed"] == 1
    assert manifest["config"]["epochs"] == 1
    assert manifest["data"]["fingerprint"] and manifest["versions"]["keras"]
    assert manifest["test"]["metric"] in manifest["metrics"]

    config = tomllib.loads((run_dir / "config.toml").read_text())
    assert config["recipe"] == recipe and config["config"]["epochs"] == 1

    for split in ("train", "validation"):
        assert list((run_dir / "logs" / split).glob("events.out.tfevents.*")), split
    for name in ("best.keras", "last.keras"):
        assert (run_dir / "checkpoints" / name).stat().st_size > 0, name
    assert not (run_dir / "checkpoints" / "backup").exists()  # Removed once a run completes.
    assert (run_dir / "model.keras").stat().st_size > 0
    meta = helpers.read_json(run_dir / "artifacts" / "meta.json")
    assert helpers.history_epochs(run_dir) == [0]
    monitor = manifest["monitor"]
    assert monitor in resumable.read_history(run_dir / "history.csv")[0]
    # A GAN's quality is judged on generated images, not validation data: Keras logs it as train.
    folder = "validation" if monitor.startswith("val_") else "train"
    logged = helpers.scalar_events(run_dir / "logs" / folder)
    assert [step for step, _ in logged["epoch_" + monitor.removeprefix("val_")]] == [0]

    metrics = helpers.read_json(run_dir / "metrics.json")
    assert metrics["rows"] > 0 and metrics["metrics"]
    baselines = {"forecast": {"persistence", "classical"},
                 "generation": {"real"}}.get(meta["task"], {"trivial"})
    if "columns" in meta:  # A table: HistGradientBoosting beside the network.
        baselines = baselines | {"classical"}
    for name, row in metrics["metrics"].items():
        # The GAN judge's accuracy is a figure of the real images alone.
        expected = baselines if name == "judge_accuracy" else {"model"} | baselines
        assert expected <= set(row), (name, row)

    plots = {p.stem for p in (run_dir / "plots").glob("*.png")}
    expected_plots = {"learning_curves", helpers.RECIPE_PLOTS.get(recipe, "learning_curves")}
    assert expected_plots <= plots, plots
    for png in (run_dir / "plots").glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return manifest


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trains_on_its_builtin_data(recipe, runs_root):
    # No --data: the offline built-in default (wine, breast cancer, digits) is what a new
    # user's first command trains on.
    if backend.current() not in registry.info(recipe).get("backends", backend.BACKENDS):
        pytest.skip(f"{recipe} cannot run on {backend.current()}, this process's backend")
    result = helpers.invoke("train", recipe, "--epochs", 1, *helpers.QUICK.get(recipe, []))
    helpers.assert_ok(result)
    run_dir = helpers.only_run(runs_root, recipe)
    manifest = _check_run_folder(run_dir, recipe)
    assert manifest["data"]["source"].endswith("(built-in)")
    assert "Test metrics" in result.output and str(run_dir) in result.output


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_trains_on_tiny_data(preset, runs_root, tmp_path):
    recipe = PRESETS[preset]["recipe"]
    if PRESETS[preset].get("config", {}).get("stateful") and backend.current() == "jax":
        pytest.skip("stateful LSTMs run on TensorFlow only (the recipe refuses them on JAX)")
    if recipe in helpers.TINY_DATA:
        writer, target = helpers.TINY_DATA[recipe]
        data = ["--data", writer(tmp_path / "tiny.csv"), "--target", target]
    else:
        # A recipe with no tiny table trains on its built-in data.
        data = helpers.QUICK.get(recipe, [])
    result = helpers.invoke("train", preset, *data, "--epochs", 1)
    helpers.assert_ok(result)
    manifest = _check_run_folder(helpers.only_run(runs_root, recipe), recipe)
    assert manifest["preset"] == preset
    for key, value in PRESETS[preset].get("config", {}).items():
        if key != "epochs":
            expected = list(value) if isinstance(value, (list, tuple)) else value
            assert manifest["config"][key] == expected, key


def test_seed_option_is_recorded(regression_csv, runs_root):
    result = helpers.invoke("train", "regression", "--data", regression_csv, "--target", "y",
                            "--epochs", 1, "--seed", 7)
    helpers.assert_ok(result)
    manifest = helpers.read_json(helpers.only_run(runs_root) / "run.json")
    assert manifest["seed"] == 7 and manifest["config"]["seed"] == 7


def test_semicolon_csv_with_categorical_feature_trains(tmp_path, runs_root):
    data = helpers.binary_csv(tmp_path / "plans.csv", delimiter=";", categorical=True)
    result = helpers.invoke("train", "binary", "--data", data, "--target", "churned",
                            "--epochs", 1)
    helpers.assert_ok(result)
    meta = helpers.read_json(helpers.only_run(runs_root) / "artifacts" / "meta.json")
    assert meta["features"] == ["x1", "x2", "x3", "plan=basic", "plan=pro"]
    assert meta["positive_class"] == "yes" and meta["classes"] == ["no", "yes"]
    assert "positive class: yes" in result.output


def test_positive_class_turns_three_classes_into_binary(multiclass_csv, runs_root):
    result = helpers.invoke("train", "binary", "--data", multiclass_csv, "--target", "species",
                            "--positive-class", "virginica", "--epochs", 1)
    helpers.assert_ok(result)
    run_dir = helpers.only_run(runs_root, "binary")
    meta = helpers.read_json(run_dir / "artifacts" / "meta.json")
    assert meta["positive_class"] == "virginica"
    assert meta["classes"] == ["not virginica", "virginica"]
    assert helpers.read_json(run_dir / "run.json")["status"] == "completed"


def test_config_toml_of_a_run_trains_again(trained, regression_csv, runs_root):
    earlier = trained["regression"]["run"]
    result = helpers.invoke("train", "regression", "--config", earlier / "config.toml",
                            "--data", regression_csv, "--target", "y")
    helpers.assert_ok(result)
    again = helpers.read_json(helpers.only_run(runs_root) / "run.json")
    assert again["config"] == helpers.read_json(earlier / "run.json")["config"]
    assert again["epochs_completed"] == again["config"]["epochs"] == 2


def test_fixture_runs_name_the_positive_class(trained):
    # The binary fixture's labels are yes/no: 'yes' is the positive class, whatever its order.
    assert "positive class: yes" in trained["binary"]["output"]
    meta = helpers.read_json(trained["binary"]["run"] / "artifacts" / "meta.json")
    assert meta["positive_class"] == "yes" and 0.0 <= meta["threshold"] <= 1.0


def test_a_diverging_run_fails_with_advice_and_is_marked_failed(regression_csv, runs_root):
    result = helpers.invoke("train", "regression", "--data", regression_csv, "--target", "y",
                            "--epochs", 2, "--set", "optimizer=sgd",
                            "--set", "learning_rate=1e30")
    helpers.assert_user_error(result, "diverged", "learning_rate")
    (run,) = helpers.run_folders(runs_root)
    manifest = helpers.read_json(run / "run.json")
    assert manifest["status"] == "failed" and "NaN or Inf loss" in manifest["error"]


def test_multiclass_keeps_the_lowest_validation_loss_and_logs_roc_auc(trained):
    """ROC-AUC saturates early on multiclass data, so the checkpoint follows val_loss (issue 6);
    ROC-AUC is still logged every epoch."""
    from dlref.resumable import read_history

    run = trained["multiclass"]["run"]
    manifest = helpers.read_json(run / "run.json")
    assert (manifest["monitor"], manifest["mode"]) == ("val_loss", "min")
    history = read_history(run / "history.csv")
    assert all("val_roc_auc" in row for row in history)
    best = min(history, key=lambda row: row["val_loss"])
    assert manifest["best"] == {"epoch": best["epoch"] + 1, "value": best["val_loss"]}


def test_classical_baseline_decides_at_one_half():
    """The network's threshold is tuned on its own validation scores; HistGradientBoosting is
    scored at 0.5, not at the network's threshold (here an extreme 0.9999)."""
    import numpy as np

    from dlref import registry
    from dlref.data import Dataset
    from dlref.saved import classical_scores

    rng = np.random.default_rng(0)
    y = (np.arange(200) % 2).astype("float32")
    x = (rng.normal(size=(200, 2)) + 1.5 * y[:, None]).astype("float32")
    meta = {"task": "binary", "classes": ["no", "yes"], "positive_class": "yes",
            "threshold": 0.9999}
    data = Dataset(train=(x[:150], y[:150]), val=(x[:0], y[:0]), test=(x[150:], y[150:]),
                   meta=meta)
    scores = classical_scores(registry.load("binary"), data, seed=0)
    assert scores["accuracy"] > 0.75 and scores["recall"] > 0.6
