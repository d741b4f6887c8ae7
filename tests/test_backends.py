"""Keras backends (--backend tensorflow | jax): chosen before Keras loads, recorded in run.json,
and a saved model loads on either. Keras picks its backend once per process, so the runs on
another backend than this test process's run in a subprocess."""

import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

import helpers
from dlref import backend, registry


def _dlref(tmp_path, *args, on, returncode=0):
    """`dlref ARGS`, whose Keras loads on backend `on`: in this process when Keras is loaded on
    it here (the runs root and working folder are tmp_path's, as conftest sets them), else in a
    subprocess. Returns an object with .returncode, .stdout and .stderr."""
    if on == backend.current():
        result = helpers.invoke(*args)
        assert result.exit_code == returncode, result.output[-4000:] + repr(result.exception)
        return SimpleNamespace(returncode=result.exit_code, stdout=result.stdout,
                               stderr=result.stderr)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "DLREF_RUNS_DIR": str(tmp_path / "runs")}
    env.pop("KERAS_BACKEND", None)
    process = subprocess.run([sys.executable, "-m", "dlref.cli", *map(str, args)], cwd=tmp_path,
                             env=env, capture_output=True, text=True, timeout=300)
    assert process.returncode == returncode, process.stdout[-2000:] + process.stderr[-2000:]
    return process


def _close(first, second):
    assert set(first) == set(second)
    for metric, row in first.items():
        assert row["model"] == pytest.approx(second[metric]["model"], rel=1e-4, abs=1e-6), metric


def test_a_jax_run_is_recorded_and_its_model_loads_on_tensorflow(tmp_path, binary_csv):
    _dlref(tmp_path, "train", "binary", "--data", binary_csv, "--target", "churned",
           "--epochs", 2, "--backend", "jax", "--name", "on-jax", on="jax")
    run_dir = helpers.only_run(tmp_path / "runs", "binary")
    assert helpers.read_json(run_dir / "run.json")["backend"] == "jax"
    listed = json.loads(_dlref(tmp_path, "runs", "--json", on=backend.current()).stdout)
    assert [run["backend"] for run in listed] == ["jax"]
    saved = helpers.read_json(run_dir / "metrics.json")["metrics"]
    on_tensorflow = _dlref(tmp_path, "evaluate", "on-jax", "--backend", "tensorflow", "--json",
                           on="tensorflow")
    _close(json.loads(on_tensorflow.stdout)["metrics"], saved)
    on_jax = _dlref(tmp_path, "evaluate", "on-jax", "--json", on="jax")  # The run's own backend.
    _close(json.loads(on_jax.stdout)["metrics"], saved)
    _dlref(tmp_path, "predict", "on-jax", "--data", binary_csv, "--backend", "tensorflow",
           on="tensorflow")
    assert (tmp_path / "binary.predictions.csv").is_file()


def test_a_tensorflow_run_loads_on_jax(tmp_path, regression_csv):
    _dlref(tmp_path, "train", "regression", "--data", regression_csv, "--target", "y",
           "--epochs", 2, "--name", "on-tf", "--backend", "tensorflow", on="tensorflow")
    run_dir = helpers.only_run(tmp_path / "runs", "regression")
    assert helpers.read_json(run_dir / "run.json")["backend"] == "tensorflow"
    on_jax = _dlref(tmp_path, "evaluate", "on-tf", "--backend", "jax", "--json", on="jax")
    _close(json.loads(on_jax.stdout)["metrics"],
           helpers.read_json(run_dir / "metrics.json")["metrics"])


def test_a_dense_recipe_trains_on_jax_and_is_tuned_on_tensorflow(tmp_path, regression_csv):
    data = ["--data", regression_csv, "--target", "y"]
    _dlref(tmp_path, "train", "regression", *data, "--epochs", 1, on="jax")
    _dlref(tmp_path, "tune", "regression", *data, "--algorithm", "random", "--max-trials", 1,
           "--max-epochs", 1, on="tensorflow")
    found = {run.name.startswith("tune-"): helpers.read_json(run / "run.json")["backend"]
             for run in helpers.run_folders(tmp_path / "runs", "regression")}
    assert found == {False: "jax", True: "tensorflow"}
    assert registry.default_backend("regression") == "jax"
    assert registry.default_backend("regression", "tune") == "tensorflow"
    assert registry.default_backend("cnn", "tune") == registry.default_backend("cnn")


@pytest.mark.slow  # make test-jax repeats the seeded-resume and seeded-run tests on JAX.
def test_the_same_seed_gives_the_same_epochs_on_jax(tmp_path, regression_csv):
    for name in ("first", "second"):
        _dlref(tmp_path, "train", "regression", "--data", regression_csv, "--target", "y",
               "--epochs", 3, "--seed", 3, "--backend", "jax", "--name", name,
               "--set", "dropout_rate=0.2", on="jax")
    first, second = sorted(helpers.run_folders(tmp_path / "runs", "regression"),
                           key=lambda run: run.name.endswith("second"))
    rows = [(run / "history.csv").read_text().splitlines() for run in (first, second)]
    assert len(rows[0]) == 4
    # Losses to 6 digits: the columns are the same numbers (the time column differs).
    losses = [[line.split(",")[:3] for line in run] for run in rows]
    assert losses[0] == losses[1]


@pytest.mark.parametrize("args, words", [
    (["train", "regression", "--backend", "torch"], ["Unknown --backend 'torch'", "jax"]),
    (["train", "dqn", "--backend", "jax"], ["--backend does not apply to dqn"]),
    (["train", "gan", "--backend", "jax"], ["gan recipe runs on tensorflow only"]),
])
def test_bad_backend_options_are_refused(args, words):
    helpers.assert_user_error(helpers.invoke(*args), *words)


def test_a_stateful_lstm_is_refused_on_jax(tmp_path):
    # Keras' stateful LSTMs carry no state from batch to batch on JAX: refused, not run wrong.
    process = _dlref(tmp_path, "train", "timeseries", "--backend", "jax", "--set",
                     "stateful=true", on="jax", returncode=2)
    assert "Traceback" not in process.stderr, process.stderr
    assert "stateful=true needs --backend tensorflow" in process.stderr + process.stdout
    assert not (tmp_path / "runs").exists()


def test_a_process_with_keras_loaded_refuses_another_backend(regression_csv):
    # This test process imported Keras (conftest), as a notebook may have.
    loaded = backend.current()
    other = "jax" if loaded == "tensorflow" else "tensorflow"
    result = helpers.invoke("train", "regression", "--data", regression_csv, "--target", "y",
                            "--epochs", 1, "--backend", other)
    helpers.assert_user_error(result, f"already loaded with the {loaded} backend")


def test_every_keras_recipe_declares_a_backend():
    for recipe in registry.RECIPES:
        if not registry.own_process(recipe):
            found = registry.info(recipe)
            assert found["backend"] in found.get("backends", backend.BACKENDS), recipe


def test_a_keras_backend_variable_a_recipe_cannot_use_gives_way(monkeypatch, capsys):
    if backend.current() != "tensorflow":
        pytest.skip("Keras is loaded on JAX in this process: gan cannot run here")
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    assert backend.use("tensorflow", supported=("tensorflow",), recipe="gan") == "tensorflow"
    assert "KERAS_BACKEND is jax, but the gan recipe runs on tensorflow only" in \
        capsys.readouterr().err
