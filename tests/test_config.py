"""Configs: --set parsing, types, precedence (defaults < preset < --config < --set), `show`."""

import json

import pytest

import helpers
from dlref import config as configlib
from dlref import registry
from dlref.errors import DlrefError
from dlref.training import resolve_config


def _show_json(*args):
    result = helpers.invoke("show", *args, "--json")
    helpers.assert_ok(result)
    return json.loads(result.output)


# --- Parsing and types -----------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("epochs=1", {"epochs": 1}),
    ("hidden_units=(8,4)", {"hidden_units": (8, 4)}),
    ("hidden_units=[8, 4]", {"hidden_units": [8, 4]}),
    ("optimizer=rmsprop", {"optimizer": "rmsprop"}),
    ("optimizer='rmsprop'", {"optimizer": "rmsprop"}),
    (" learning_rate = 1e-4 ", {"learning_rate": 0.0001}),
    ("tune_threshold=False", {"tune_threshold": False}),
])
def test_parse_overrides(text, expected):
    assert configlib.parse_overrides([text]) == expected


@pytest.mark.parametrize("text", ["epochs", "=3", ""])
def test_parse_overrides_needs_key_equals_value(text):
    with pytest.raises(DlrefError, match="key=value"):
        configlib.parse_overrides([text])


@pytest.mark.parametrize("key, value, default, expected", [
    ("learning_rate", 1, 0.001, 1.0),  # An int where a float is expected is fine.
    ("hidden_units", [8, 4], (32,), (8, 4)),  # TOML lists become tuples.
    ("hidden_units", 64, (32,), (64,)),  # One number is one layer.
    ("optimizer", "sgd", "adam", "sgd"),
    ("tune_threshold", False, True, False),
    ("tune_threshold", "false", True, False),  # As TOML and `dlref show` spell booleans.
    ("stateful", "True", False, True),
])
def test_coerce_accepts(key, value, default, expected):
    coerced = configlib.coerce(key, value, default)
    assert coerced == expected and type(coerced) is type(expected)


@pytest.mark.parametrize("key, value, default", [
    ("epochs", "abc", 200),
    ("epochs", 2.5, 200),
    ("epochs", True, 200),  # bool is an int subclass; still refused.
    ("dropout_rate", "x", 0.0),
    ("tune_threshold", 1, True),
    ("tune_threshold", "yes", True),
    ("hidden_units", "wide", (32,)),
    ("optimizer", 3, "adam"),
])
def test_coerce_refuses_wrong_types(key, value, default):
    with pytest.raises(DlrefError, match=f"{key} in --set must be {type(default).__name__}"):
        configlib.coerce(key, value, default)


def test_merge_refuses_unknown_keys_with_a_close_match():
    with pytest.raises(DlrefError, match="Unknown config key 'epoch' in --set. Did you mean "
                                         "'epochs'?"):
        configlib.merge({"epochs": 1, "seed": 2}, [("--set", {"epoch": 3})])


def test_every_recipe_config_default_is_a_plain_value():
    # config_fields reads the defaults from source with ast: they must stay literals, and the
    # ones `dlref show` prints must match the dataclass the recipe really builds.
    for recipe in registry.RECIPES:
        fields = registry.config_fields(recipe)
        module = registry.load(recipe)
        assert {k: v for k, v, _ in fields} == configlib.field_defaults(module.Config)
        assert all(comment for _, _, comment in fields), recipe


# --- Precedence ------------------------------------------------------------------------------


def test_precedence_defaults_preset_config_set(tmp_path):
    config_file = tmp_path / "mine.toml"
    config_file.write_text('recipe = "multiclass"\n[config]\ndropout_rate = 0.3\nl2 = 0.02\n'
                           "batch_size = 16\n")
    defaults = _show_json("multiclass")["config"]
    preset = _show_json("multiclass-dropout")["config"]
    assert defaults["dropout_rate"] == 0.0 and preset["dropout_rate"] == 0.5
    layered = _show_json("multiclass-dropout", "--config", config_file, "--set", "l2=0.05")
    values = layered["config"]
    assert layered["preset"] == "multiclass-dropout" and layered["recipe"] == "multiclass"
    assert values["dropout_rate"] == 0.3  # --config over the preset
    assert values["l2"] == 0.05  # --set over --config
    assert values["batch_size"] == 16  # --config over the default
    assert values["learning_rate"] == defaults["learning_rate"]  # untouched


def test_epochs_and_seed_options_beat_set():
    _, _, values = resolve_config("regression", overrides=["epochs=5", "seed=1"], epochs=2,
                                  seed=3)
    assert values["epochs"] == 2 and values["seed"] == 3


def test_show_with_set_values(tmp_path):
    values = _show_json("regression", "--set", "epochs=1", "--set", "hidden_units=(8,4)",
                        "--set", "optimizer=rmsprop")["config"]
    assert values["epochs"] == 1
    assert values["hidden_units"] == [8, 4]
    assert values["optimizer"] == "rmsprop"


def test_show_prints_the_resolved_config_with_comments():
    result = helpers.invoke("show", "regression")
    helpers.assert_ok(result)
    lines = result.output.splitlines()
    assert lines[0].startswith("# Regression with a multilayer perceptron")
    assert "recipe regression, chapter 2" in lines[1]
    assert "best checkpoint by val_loss (min)" in lines[1]
    by_key = {line.split(" = ")[0]: line for line in lines[2:]}
    assert set(by_key) == {k for k, _, _ in registry.config_fields("regression")}
    assert by_key["hidden_units"].startswith("hidden_units = [32]")
    assert "# the book's single hidden layer of 32 units" in by_key["hidden_units"]


def test_show_a_preset_names_it():
    result = helpers.invoke("show", "multiclass-dropout")
    helpers.assert_ok(result)
    assert "preset multiclass-dropout" in result.output
    assert "dropout_rate = 0.5" in result.output


# --- Errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("args, words", [
    (["--set", "epoch=1"], ["Unknown config key 'epoch'", "Did you mean 'epochs'"]),
    (["--set", "epochs=abc"], ["epochs", "must be int", "'abc'"]),
    (["--set", "dropout_rate='x'"], ["dropout_rate", "must be float", "'x'"]),
    (["--set", "hidden_units=wide"], ["hidden_units", "must be tuple"]),
    (["--set", "epochs"], ["key=value"]),
    (["--config", "missing.toml"], ["Config file not found", "missing.toml"]),
])
def test_show_refuses_bad_overrides(args, words):
    helpers.assert_user_error(helpers.invoke("show", "regression", *args), *words)


def test_unknown_key_in_config_file_names_the_file(tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text('recipe = "regression"\n[config]\nlearnig_rate = 0.1\n')
    helpers.assert_user_error(helpers.invoke("show", "regression", "--config", path),
                              "'learnig_rate'", str(path), "Did you mean 'learning_rate'")


def test_config_for_another_recipe_is_refused(tmp_path):
    path = tmp_path / "other.toml"
    path.write_text(configlib.to_toml("regression", {"epochs": 3}))
    helpers.assert_user_error(helpers.invoke("show", "binary", "--config", path),
                              "config for recipe 'regression'", "not 'binary'")


def test_invalid_toml_is_refused(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("recipe = regression\n")
    helpers.assert_user_error(helpers.invoke("show", "regression", "--config", path),
                              "not valid TOML")


def test_to_toml_round_trips(tmp_path):
    values = configlib.field_defaults(registry.load("binary").Config)
    path = tmp_path / "config.toml"
    path.write_text(configlib.to_toml("binary", values))
    document = configlib.read_toml(path)
    assert document["recipe"] == "binary"
    assert configlib.merge(values, [("file", document["config"])]) == values


def test_train_refuses_a_bad_override_before_creating_a_run(runs_root):
    result = helpers.invoke("train", "regression", "--set", "dropout_rate='x'")
    helpers.assert_user_error(result, "dropout_rate", "float")
    assert helpers.run_folders(runs_root) == []


@pytest.mark.parametrize("seed", [-1, 2**32, 10**20])
def test_a_seed_numpy_cannot_take_is_refused(seed, regression_csv):
    result = helpers.invoke("train", "regression", "--data", regression_csv, "--target", "y",
                            "--seed", seed, "--epochs", 1)
    helpers.assert_user_error(result, "seed must be a whole number from 0 to 4,294,967,295")
    helpers.assert_user_error(helpers.invoke("show", "binary", "--set", f"seed={seed}"),
                              "seed must be")
