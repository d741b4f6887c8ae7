"""Fixtures: every test seeded and writing under tmp_path; tiny CSVs; runs trained once."""

import os

import pytest

import helpers

# Before TensorFlow is first imported: keep its C++ log lines out of the test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Keras picks one backend per process, so the in-process tests run every recipe on one:
# TensorFlow unless KERAS_BACKEND says otherwise (`make test-jax` runs the suites of the
# recipes that default to JAX on JAX). Tests of the recipes' own defaults use subprocesses.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


@pytest.fixture(autouse=True)
def seeded():
    """Seeds Python, NumPy and TensorFlow (keras.utils.set_random_seed) before every test."""
    import keras

    keras.utils.set_random_seed(0)


@pytest.fixture(autouse=True)
def no_backend_request():
    """A --backend given to an in-process command does not carry over to the next test."""
    from dlref import backend

    yield
    backend.request(None)


@pytest.fixture(autouse=True)
def runs_root(tmp_path, monkeypatch):
    """The runs root for this test (DLREF_RUNS_DIR); the working folder is tmp_path too, so a
    stray relative path cannot write into the checkout."""
    root = tmp_path / "runs"
    monkeypatch.setenv("DLREF_RUNS_DIR", str(root))
    monkeypatch.chdir(tmp_path)
    return root


@pytest.fixture
def regression_csv(tmp_path):
    return helpers.regression_csv(tmp_path / "regression.csv")


@pytest.fixture
def binary_csv(tmp_path):
    return helpers.binary_csv(tmp_path / "binary.csv")


@pytest.fixture
def multiclass_csv(tmp_path):
    return helpers.multiclass_csv(tmp_path / "multiclass.csv")


@pytest.fixture
def semicolon_csv(tmp_path):
    """Binary data with ';' between fields."""
    return helpers.binary_csv(tmp_path / "semicolon.csv", delimiter=";")


@pytest.fixture
def categorical_csv(tmp_path):
    """Regression data with a string feature column 'color' (red / green / blue)."""
    return helpers.regression_csv(tmp_path / "categorical.csv", categorical=True)


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """One completed 2-epoch run per tabular recipe, shared by the read-only tests.

    binary: ';'-delimited, a categorical 'plan' column and yes/no labels; regression: a
    categorical 'color' column; multiclass: three string classes.
    Returns {recipe: {"run": folder, "data": csv, "target": column, "root": runs root}}.
    """
    import keras

    keras.utils.set_random_seed(0)
    base = tmp_path_factory.mktemp("trained")
    root = base / "runs"
    datasets = {
        "regression": (helpers.regression_csv(base / "houses.csv", categorical=True), "y"),
        "binary": (helpers.binary_csv(base / "churn.csv", delimiter=";", categorical=True),
                   "churned"),
        "multiclass": (helpers.multiclass_csv(base / "iris.csv"), "species"),
    }
    found = {}
    for recipe, (path, target) in datasets.items():
        result = helpers.invoke("train", recipe, "--data", path, "--target", target,
                                "--epochs", 2, "--runs-dir", root, "--name", f"fixture-{recipe}")
        helpers.assert_ok(result)
        found[recipe] = {"run": helpers.only_run(root, recipe), "data": path, "target": target,
                         "root": root, "output": result.output}
    return found
