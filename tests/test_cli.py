"""The command line: list, help, lazy imports (no TensorFlow for the fast commands), packaging."""

import json
import tomllib
import zipfile

import pytest

import helpers
from dlref import registry

HEAVY = ("tensorflow", "keras", "sklearn", "pandas")

# Runs `dlref ARGS` in a fresh interpreter and reports which heavy packages it imported.
IMPORT_PROBE = f"""
import json, sys
from dlref.cli import app
try:
    app(sys.argv[1:], standalone_mode=False)
finally:
    heavy = sorted({{m.split(".")[0] for m in sys.modules}} & set({HEAVY!r}))
    print("HEAVY=" + json.dumps(heavy), file=sys.stderr)
"""


def test_list_shows_every_recipe_and_preset():
    result = helpers.invoke("list")
    helpers.assert_ok(result)
    for name in list(registry.RECIPES) + list(registry.presets()):
        assert f"  {name} " in result.output, name
    assert "ch  2" in result.output and "Presets" in result.output


def test_list_json():
    result = helpers.invoke("list", "--json")
    helpers.assert_ok(result)
    listed = json.loads(result.output)
    assert [r["name"] for r in listed["recipes"]] == list(registry.RECIPES)
    for recipe in listed["recipes"]:
        assert {"chapter", "summary", "monitor", "mode", "tunable", "title"} <= set(recipe)
        assert recipe["mode"] in ("min", "max")
    presets = {p["name"]: p for p in listed["presets"]}
    assert set(presets) == {p.stem for p in (helpers.REPO / "recipes").glob("*.toml")}
    assert all(p["recipe"] in registry.RECIPES and p["summary"] for p in presets.values())
    assert presets["multiclass-dropout"]["recipe"] == "multiclass"


def test_help_has_examples():
    result = helpers.invoke("--help")
    helpers.assert_ok(result)
    assert "dlref train binary --data churn.csv --target churned" in result.output
    for command in ("list", "show", "train", "evaluate", "predict", "runs", "tensorboard"):
        assert command in result.output
    train_help = helpers.invoke("train", "--help")
    helpers.assert_ok(train_help)
    assert "--resume" in train_help.output and "Examples" in train_help.output


def test_tensorboard_on_a_missing_folder(tmp_path):
    result = helpers.invoke("tensorboard", tmp_path / "nothing-here")
    helpers.assert_user_error(result, "No folder", "dlref train")


def test_importing_the_cli_loads_nothing_heavy():
    code = ("import json, sys, dlref, dlref.cli; "
            f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))")
    process = helpers.python(code)
    assert process.returncode == 0, process.stderr
    assert json.loads(process.stdout) == []


@pytest.mark.parametrize("args", [["--help"], ["list"], ["list", "--json"], ["show", "regression"],
                                  ["show", "multiclass-dropout", "--set", "epochs=3"], ["runs"],
                                  ["show", "dqn"], ["show", "dqn-breakout"]],
                         ids=" ".join)
def test_fast_commands_never_import_tensorflow(args, tmp_path):
    process = helpers.python(["-c", IMPORT_PROBE, *args], env={"DLREF_RUNS_DIR": str(tmp_path)})
    assert process.returncode == 0, process.stderr
    heavy = next(line for line in process.stderr.splitlines() if line.startswith("HEAVY="))
    assert json.loads(heavy.removeprefix("HEAVY=")) == [], process.stderr
    assert process.stdout.strip()  # It did answer.


def test_presets_are_packaged_into_the_wheel_config():
    # pyproject maps ./recipes to dlref/presets in the wheel, where registry.preset_dir looks.
    pyproject = tomllib.loads((helpers.REPO / "pyproject.toml").read_text())
    force_include = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert force_include == {"recipes": "dlref/presets"}
    assert registry.preset_dir().resolve() == (helpers.REPO / "recipes").resolve()


@pytest.mark.slow
def test_wheel_contains_the_presets(tmp_path):
    process = helpers.python(["-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path),
                              str(helpers.REPO)], timeout=300)
    if process.returncode != 0 and "hatchling" in process.stderr:
        pytest.skip(f"could not get the build backend: {process.stderr[-300:]}")
    assert process.returncode == 0, process.stderr
    wheel = next(tmp_path.glob("dlref-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    presets = {n.removeprefix("dlref/presets/") for n in names if n.startswith("dlref/presets/")}
    assert presets == {p.name for p in (helpers.REPO / "recipes").glob("*.toml")}
    assert "dlref/cli.py" in names and not any(n.startswith("tests/") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "dlref = dlref.cli:app" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_python_module_entry_point_runs():
    process = helpers.python(["-m", "dlref.cli", "list", "--json"])
    assert process.returncode == 0, process.stderr
    assert json.loads(process.stdout)["recipes"]
