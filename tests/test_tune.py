"""dlref tune: budget, outputs, best.toml, resume (kill -9 included), refusals, chief + workers.

Searches run on 40-60-row tables with max_epochs 2-3, so a Hyperband search is 2-6 trials of a
second or two. Ctrl-C, kill -9 and the chief / worker roles cross process boundaries, so those
tests run `python -m dlref.cli` in subprocesses; everything else runs in-process.
"""

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

import helpers
from dlref import registry, tuning

ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


def _trials(run_dir):
    with open(Path(run_dir) / "trials.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _tune_args(data, target="y", max_epochs=2, *extra):
    return ["tune", "regression", "--data", data, "--target", target,
            "--max-epochs", max_epochs, *extra]


def _train_event_files(run_dir, trial_id):
    return list((Path(run_dir) / "logs" / trial_id / "execution0" / "train").glob("events.*"))


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def start(tmp_path):
    """Starts `dlref ARGS` in subprocesses (stdout and stderr captured as text), and kills those
    still running when the test ends, so that a failing test leaves no chief or worker behind."""
    processes = []

    def start(args):
        process = subprocess.Popen([sys.executable, "-m", "dlref.cli", *map(str, args)],
                                   cwd=tmp_path, env={**os.environ, **ENV},
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        processes.append(process)
        return process

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


# --- The budget --------------------------------------------------------------------------------


def _simulate_hyperband(max_epochs, factor, iterations, tmp_path):
    """Drives keras-tuner's own HyperbandOracle with made-up scores; counts trials and epochs."""
    import keras_tuner

    oracle = keras_tuner.oracles.HyperbandOracle(
        objective=keras_tuner.Objective("score", "min"), max_epochs=max_epochs, factor=factor,
        hyperband_iterations=iterations, seed=1)
    oracle._set_project_dir(str(tmp_path), "simulated")
    hp = keras_tuner.HyperParameters()
    hp.Float("x", 0.0, 1.0)
    oracle.update_space(hp)
    trials = epochs = 0
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status == "STOPPED":
            return trials, epochs
        values = trial.hyperparameters.values
        trials += 1
        epochs += values["tuner/epochs"] - values["tuner/initial_epoch"]
        oracle.update_trial(trial.trial_id, {"score": values["x"]})
        trial.status = "COMPLETED"
        oracle.end_trial(trial)


@pytest.mark.parametrize("max_epochs, factor, iterations",
                         [(1, 3, 1), (2, 3, 1), (3, 3, 1), (9, 3, 1), (10, 2, 2), (30, 4, 1)])
def test_hyperband_budget_is_what_the_oracle_runs(max_epochs, factor, iterations, tmp_path):
    settings = {"algorithm": "hyperband", "max_epochs": max_epochs, "factor": factor,
                "iterations": iterations}
    plan = tuning.budget(settings)
    assert (plan["trials"], plan["epochs"]) == _simulate_hyperband(
        max_epochs, factor, iterations, tmp_path)


def test_random_budget():
    plan = tuning.budget({"algorithm": "random", "max_trials": 7, "max_epochs": 3})
    assert (plan["trials"], plan["epochs"]) == (7, 21)


# --- One search, every output -----------------------------------------------------------------


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A completed Hyperband search (max_epochs 2: 2 trials of 2 epochs) on a tiny table."""
    import keras

    keras.utils.set_random_seed(0)
    base = tmp_path_factory.mktemp("searched")
    data = helpers.regression_csv(base / "houses.csv")
    root = base / "runs"
    result = helpers.invoke(*_tune_args(data), "--runs-dir", root, "--name", "hb")
    helpers.assert_ok(result)
    return {"run": helpers.only_run(root, "regression"), "data": data, "root": root,
            "output": result.output}


def test_search_writes_every_output(searched):
    run_dir, output = searched["run"], searched["output"]
    assert run_dir.name.startswith("tune-") and run_dir.name.endswith("-hb")
    assert "Budget: 2 trials, 4 epochs" in output
    assert "trial 0001 (2 of 2) done" in output and "best" in output and "elapsed" in output

    manifest = helpers.read_json(run_dir / "run.json")
    assert manifest["kind"] == "tune" and manifest["status"] == "completed"
    assert manifest["budget"]["trials"] == 2 and manifest["budget"]["epochs"] == 4
    assert manifest["epochs_completed"] == 4 and manifest["trials"]["completed"] == 2
    assert manifest["search"] == {"algorithm": "hyperband", "max_epochs": 2, "factor": 3,
                                  "iterations": 1, "objective": "val_loss", "direction": "min"}
    assert manifest["monitor"] == "val_loss" and manifest["argv"]
    assert manifest["versions"]["keras-tuner"] and manifest["data"]["fingerprint"]
    assert manifest["search_space"]["fingerprint"]
    names = {p["name"] for p in manifest["search_space"]["hyperparameters"]}
    assert {"depth", "width_scale", "dropout_rate", "optimizer", "learning_rate",
            "batch_size"} <= names

    trials = _trials(run_dir)
    assert [row["rank"] for row in trials] == ["1", "2"]
    scores = [float(row["val_loss"]) for row in trials]
    assert scores == sorted(scores)  # Ranked: val_loss is minimized.
    assert manifest["best"] == {"trial": trials[0]["trial"], "value": scores[0]}
    assert all(row["status"] == "completed" and row["epochs"] == "2" for row in trials)
    assert names <= set(trials[0])

    project = run_dir / "project"
    assert (project / "oracle.json").is_file() and (project / "tuner0.json").is_file()
    for row in trials:
        assert (project / f"trial_{row['trial']}" / "trial.json").is_file()
    memory = manifest["memory"]["rss_mib_after_trial"]
    assert len(memory) == 2 and all(value > 0 for value in memory)


def _plugins(event_file):
    from tensorflow.core.util import event_pb2
    from tensorflow.python.lib.io import tf_record

    found = set()
    for record in tf_record.tf_record_iterator(str(event_file)):
        event = event_pb2.Event.FromString(record)
        for value in event.summary.value:
            found.add(value.metadata.plugin_data.plugin_name)
    return found


def test_tensorboard_has_a_folder_per_trial_and_hparams(searched):
    logs = searched["run"] / "logs"
    assert "hparams" in set().union(*map(_plugins, logs.glob("events.*")))  # The experiment.
    for row in _trials(searched["run"]):
        session = logs / row["trial"] / "execution0"
        assert "hparams" in set().union(*map(_plugins, session.glob("events.*")))
        assert len(_train_event_files(searched["run"], row["trial"])) == 1
        assert list((session / "validation").glob("events.*"))


def test_best_toml_trains(searched, tmp_path):
    best = tomllib.loads((searched["run"] / "best.toml").read_text())
    keys = {name for name, _, _ in registry.config_fields("regression")}
    assert best["recipe"] == "regression" and set(best["config"]) == keys
    result = helpers.invoke("train", "regression", "--config", searched["run"] / "best.toml",
                            "--epochs", 1, "--data", searched["data"], "--target", "y",
                            "--runs-dir", tmp_path / "runs")
    helpers.assert_ok(result)
    manifest = helpers.read_json(helpers.only_run(tmp_path / "runs", "regression") / "run.json")
    assert manifest["status"] == "completed"
    for key in ("hidden_units", "dropout_rate", "optimizer", "learning_rate", "batch_size"):
        assert manifest["config"][key] == best["config"][key], key


def test_runs_lists_the_search(searched):
    result = helpers.invoke("runs", "--runs-dir", searched["root"], "--json")
    helpers.assert_ok(result)
    (listed,) = json.loads(result.output)
    assert listed["kind"] == "tune" and listed["status"] == "completed"
    result = helpers.invoke("runs", "--runs-dir", searched["root"])
    assert searched["run"].name in result.output and "val_loss" in result.output


# --- Resume: what it refuses ------------------------------------------------------------------


@pytest.fixture
def stopped(searched, tmp_path):
    """A copy of the search, marked interrupted, reading a copy of its data."""
    run_dir = tmp_path / "runs" / "regression" / searched["run"].name
    shutil.copytree(searched["run"], run_dir)
    data = shutil.copy(searched["data"], tmp_path / "houses.csv")
    manifest = helpers.read_json(run_dir / "run.json")
    manifest["status"] = "interrupted"
    manifest["source"]["data"] = str(data)
    (run_dir / "run.json").write_text(json.dumps(manifest))
    return run_dir, Path(data)


def test_resume_of_a_finished_oracle_completes_without_new_trials(stopped):
    run_dir, data = stopped
    # The original options given again are accepted: same data, space and budget.
    result = helpers.invoke(*_tune_args(data), "--resume", run_dir)
    helpers.assert_ok(result)
    assert helpers.read_json(run_dir / "run.json")["status"] == "completed"
    assert len(_trials(run_dir)) == 2 and "started" not in result.output


def test_resume_of_a_search_in_use_is_refused(stopped):
    from dlref import runs

    run_dir, data = stopped
    with runs.locked(run_dir):
        result = helpers.invoke(*_tune_args(data), "--resume", run_dir)
    helpers.assert_user_error(result, "in use by dlref process")
    assert helpers.read_json(run_dir / "run.json")["status"] == "interrupted"


def test_resume_refuses_changed_data(stopped):
    run_dir, data = stopped
    header, rows = helpers.regression_rows(seed=1)
    helpers.write_csv(data, header, rows)
    result = helpers.invoke("tune", "--resume", run_dir)
    helpers.assert_user_error(result, "data changed", "start a new search")


def test_resume_refuses_a_changed_base_config(stopped):
    result = helpers.invoke("tune", "--resume", stopped[0], "--set", "dropout_rate=0.2")
    helpers.assert_user_error(result, "search space changed", "dropout_rate",
                              "config dropout_rate: 0.0 -> 0.2")


def test_resume_refuses_a_changed_search_space(stopped, monkeypatch):
    module = registry.load("regression")
    original = module.search_space

    def wider(hp, config):
        hp.Choice("activation", ["relu", "tanh"])
        return original(hp, config)

    monkeypatch.setattr(module, "search_space", wider)
    result = helpers.invoke("tune", "--resume", stopped[0])
    helpers.assert_user_error(result, "search space changed", "hyperparameter activation added")


def test_resume_refuses_a_changed_budget(stopped):
    result = helpers.invoke("tune", "--resume", stopped[0], "--max-epochs", 5)
    helpers.assert_user_error(result, "--max-epochs: 2 -> 5")


def test_resume_refuses_what_is_not_a_stopped_search(searched, tmp_path):
    helpers.assert_user_error(helpers.invoke("tune", "--resume", searched["run"]),
                              "already completed")
    helpers.assert_user_error(helpers.invoke("tune", "--resume", tmp_path), "not a dlref run")
    train_run = tmp_path / "runs" / "regression" / "20260101-000000-abcd"
    train_run.mkdir(parents=True)
    (train_run / "run.json").write_text(json.dumps({"kind": "train", "status": "interrupted"}))
    helpers.assert_user_error(helpers.invoke("tune", "--resume", train_run),
                              "not a tuning run")


@pytest.mark.parametrize("damaged", ["oracle.json", "tuner0.json", "trial_0001/trial.json"])
def test_resume_refuses_a_truncated_project_file(damaged, stopped):
    run_dir, _ = stopped
    path = run_dir / "project" / damaged
    text = path.read_text()
    path.write_text(text[:len(text) // 2])  # Half: tuner0.json holds only "{}".
    truncated = path.read_text()
    result = helpers.invoke("tune", "--resume", run_dir)
    helpers.assert_user_error(result, str(path), "truncated or damaged", "not valid JSON",
                              "trials.csv", "start a new search")
    assert path.read_text() == truncated  # Left as it was, and so is the run.
    assert helpers.read_json(run_dir / "run.json")["status"] == "interrupted"


# --- Bad input: refused before a run folder exists ---------------------------------------------


@pytest.mark.parametrize("extra, words", [
    (["--objective", "val_mea"], ["Unknown objective 'val_mea'", "val_loss", "val_rmse"]),
    (["--objective", "val_rmse:up"], ["val_rmse:min"]),
    (["--max-epochs", "0"], ["budget of zero"]),
    (["--algorithm", "random", "--max-trials", "0"], ["budget of zero"]),
    (["--max-trials", "5"], ["--max-trials is for random and bayesian"]),
    (["--factor", "1"], ["--factor 2 or more"]),
    (["--algorithm", "random", "--factor", "2"], ["Hyperband's"]),
    (["--algorithm", "grid"], ["Unknown --algorithm 'grid'", "hyperband"]),
    (["--role", "worker"], ["needs --oracle HOST:PORT"]),
    (["--role", "worker", "--oracle", "127.0.0.1:8000"], ["--worker-id"]),
    (["--role", "worker", "--oracle", "127.0.0.1:8000", "--worker-id", "chief2"], ["chief"]),
    (["--role", "chief", "--oracle", "10.1.2.3:8000"], ["no authentication", "--allow-remote"]),
    (["--role", "chief", "--oracle", "8000"], ["HOST:PORT"]),
    (["--oracle", "127.0.0.1:8000"], ["--role chief or --role worker"]),
])
def test_bad_input_is_refused(extra, words, regression_csv, runs_root):
    result = helpers.invoke(*_tune_args(regression_csv, "y", 2, *extra))
    helpers.assert_user_error(result, *words)
    assert not helpers.run_folders(runs_root)


def test_a_busy_port_is_refused_for_the_chief(regression_csv, runs_root):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        oracle = f"127.0.0.1:{busy.getsockname()[1]}"
        result = helpers.invoke(*_tune_args(regression_csv), "--role", "chief", "--oracle", oracle)
    helpers.assert_user_error(result, f"Cannot listen on {oracle}")
    assert not helpers.run_folders(runs_root)


def test_worker_without_a_chief_gives_up_in_bounded_time(regression_csv, runs_root):
    started = time.monotonic()
    result = helpers.invoke(*_tune_args(regression_csv), "--role", "worker", "--oracle",
                            f"127.0.0.1:{_free_port()}", "--worker-id", "w0",
                            "--connect-timeout", 1)
    helpers.assert_user_error(result, "No chief answered", "within 1 s", "--role chief")
    assert time.monotonic() - started < 30
    assert not helpers.run_folders(runs_root)


def test_a_recipe_without_search_space_is_not_tunable(tmp_path, monkeypatch, regression_csv):
    (tmp_path / "toy_recipe.py").write_text(
        '"""Toy."""\nimport dataclasses\nNAME = "toy"\nCHAPTER = 0\nSUMMARY = "toy"\n'
        'MONITOR = "val_loss"\nMODE = "min"\n\n\n@dataclasses.dataclass(frozen=True)\n'
        "class Config:\n    epochs: int = 1  # epochs\n    seed: int = 0  # seed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.RECIPES, "toy", "toy_recipe")
    result = helpers.invoke("tune", "toy", "--data", regression_csv, "--target", "y")
    helpers.assert_user_error(result, "not tunable", "regression")


# --- Other algorithms and objectives -----------------------------------------------------------


@pytest.mark.parametrize("algorithm, recipe, objective, direction", [
    ("random", "multiclass", "val_accuracy", "max"),
    ("bayesian", "binary", None, "max"),  # binary's monitor: val_roc_auc, from RocAuc.
])
def test_random_and_bayesian(algorithm, recipe, objective, direction, tmp_path, runs_root):
    writer, target = helpers.TINY_DATA[recipe]
    args = ["tune", recipe, "--data", writer(tmp_path / "tiny.csv"), "--target", target,
            "--algorithm", algorithm, "--max-trials", 2, "--max-epochs", 1]
    result = helpers.invoke(*args, *(["--objective", objective] if objective else []))
    helpers.assert_ok(result)
    assert "Budget: 2 trials x 1 epoch = 2 epochs" in result.output
    run_dir = helpers.only_run(runs_root, recipe)
    manifest = helpers.read_json(run_dir / "run.json")
    assert manifest["search"]["objective"] == (objective or "val_roc_auc")
    assert manifest["search"]["direction"] == direction
    trials = _trials(run_dir)
    assert len(trials) == 2 and all(row["status"] == "completed" for row in trials)
    scores = [float(row[manifest["search"]["objective"]]) for row in trials]
    assert scores == sorted(scores, reverse=True)  # Maximized.


# --- Process boundaries: Ctrl-C, kill -9, chief and workers ------------------------------------


def _wait_for(condition, process, timeout=180):
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _running_trial(run_dir):
    """The id of a trial whose trial.json says RUNNING after another one completed, or None."""
    if not (run_dir / "trials.csv").is_file() or not any(
            row["status"] == "completed" for row in _trials(run_dir)):
        return None
    for path in (run_dir / "project").glob("trial_*/trial.json"):
        try:
            state = json.loads(path.read_text())
        except ValueError:
            continue
        if state["status"] == "RUNNING":
            return state["trial_id"]
    return None


def test_resume_after_kill_9_runs_each_completed_trial_once(regression_csv, runs_root, start):
    process = start(_tune_args(regression_csv, "y", 3))  # 6 trials, 11 epochs.
    _wait_for(lambda: helpers.run_folders(runs_root, "regression"), process)
    run_dir = helpers.only_run(runs_root, "regression")
    _wait_for(lambda: _running_trial(run_dir), process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    killed_in = _running_trial(run_dir)
    done_before = [row["trial"] for row in _trials(run_dir) if row["status"] == "completed"]
    assert killed_in and done_before

    result = helpers.invoke("tune", "--resume", run_dir)
    helpers.assert_ok(result)
    assert f"Resuming {run_dir}: {len(done_before)} of 6 trials completed" in result.output
    trials = _trials(run_dir)
    ids = [row["trial"] for row in trials]
    assert len(ids) == 6 and len(set(ids)) == 6
    assert all(row["status"] == "completed" for row in trials)
    manifest = helpers.read_json(run_dir / "run.json")
    assert manifest["status"] == "completed" and manifest["epochs_completed"] == 11
    for trial_id in done_before:  # Not trained again after the resume.
        assert len(_train_event_files(run_dir, trial_id)) == 1, trial_id
        assert f"trial {trial_id} (" not in result.output
    assert f"trial {killed_in} (" in result.output  # The interrupted trial was retried.


def test_a_trial_killed_before_the_oracle_recorded_it_is_forgotten(tmp_path):
    # create_trial writes trial.json, then oracle.json: kill -9 can land between the two.
    from dlref.tuning import engine

    settings = {"algorithm": "hyperband", "objective": "val_loss", "direction": "min",
                "max_epochs": 3, "factor": 3, "iterations": 1}

    def oracle():
        made = engine.make_oracle(settings, seed=0)
        made.hyperparameters.Int("units", 1, 64)
        made._set_project_dir(str(tmp_path), engine.PROJECT)
        return made

    first = oracle()
    recorded = first.create_trial("tuner0")
    first.save = lambda: None  # The kill: the next trial's oracle.json is never written.
    orphan = first.create_trial("tuner1")
    assert (tmp_path / engine.PROJECT / f"trial_{orphan.trial_id}" / "trial.json").is_file()

    second = oracle()
    second.reload()
    assert list(second.trials) == [recorded.trial_id]
    assert not (tmp_path / engine.PROJECT / f"trial_{orphan.trial_id}").exists()
    retried, new = second.create_trial("tuner0"), second.create_trial("tuner1")
    assert retried.trial_id == recorded.trial_id  # Killed while running: retried.
    assert new.trial_id == orphan.trial_id  # The next trial takes the forgotten one's id.


def test_ctrl_c_marks_the_search_interrupted(regression_csv, runs_root, start):
    process = start(_tune_args(regression_csv, "y", 3))
    _wait_for(lambda: helpers.run_folders(runs_root, "regression"), process)
    run_dir = helpers.only_run(runs_root, "regression")
    _wait_for(lambda: _running_trial(run_dir), process)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert helpers.read_json(run_dir / "run.json")["status"] == "interrupted"
    assert f"dlref tune --resume {run_dir}" in output


def test_chief_and_two_workers_run_each_trial_once(regression_csv, runs_root, start):
    oracle = f"127.0.0.1:{_free_port()}"
    args = _tune_args(regression_csv, "y", 3)  # 6 trials, 2 of them warm-started.
    chief = start([*args, "--role", "chief", "--oracle", oracle])
    workers = {name: start([*args, "--role", "worker", "--oracle", oracle, "--worker-id", name,
                            "--connect-timeout", 120]) for name in ("w0", "w1")}
    outputs = {name: p.communicate(timeout=300)[0] for name, p in [*workers.items(),
                                                                    ("chief", chief)]}
    for name, process in [*workers.items(), ("chief", chief)]:
        assert process.returncode == 0, f"{name}:\n{outputs[name]}"

    run_dir = helpers.only_run(runs_root, "regression")
    manifest = helpers.read_json(run_dir / "run.json")
    assert manifest["status"] == "completed" and manifest["role"] == "chief"
    trials = _trials(run_dir)
    ids = [row["trial"] for row in trials]
    assert len(ids) == 6 and len(set(ids)) == 6
    assert all(row["status"] == "completed" for row in trials)
    ran = {name: {line.split()[2] for line in outputs[name].splitlines()
                  if line.startswith(f"{name}: trial ")} for name in workers}
    assert ran["w0"].isdisjoint(ran["w1"]) and ran["w0"] | ran["w1"] == set(ids), ran
    assert {row["worker"] for row in trials} <= {"w0", "w1"}
    for trial_id in ids:
        assert len(_train_event_files(run_dir, trial_id)) == 1, trial_id


@pytest.mark.slow
def test_memory_stays_flat_over_20_trials(regression_csv, runs_root):
    result = helpers.invoke(*_tune_args(regression_csv, "y", 1), "--algorithm", "random",
                            "--max-trials", 20)
    helpers.assert_ok(result)
    manifest = helpers.read_json(helpers.only_run(runs_root, "regression") / "run.json")
    rss = manifest["memory"]["rss_mib_after_trial"]
    assert len(rss) == 20
    # Without clearing TensorFlow's custom-gradient registry this grew ~5 MiB a trial.
    assert rss[-1] - rss[0] < 40, rss


def test_failing_trials_are_recorded_and_stop_the_search(regression_csv, runs_root, monkeypatch):
    module = registry.load("regression")
    original, calls = module.build_model, []

    def broken(config, data):
        # The objective check and keras-tuner's first look at the space build; trials fail.
        calls.append(config)
        if len(calls) > 2:
            raise ValueError("this network cannot be built")
        return original(config, data)

    monkeypatch.setattr(module, "build_model", broken)
    result = helpers.invoke(*_tune_args(regression_csv, "y", 3))
    helpers.assert_user_error(result, "repeated failed trials", "this network cannot be built")
    run_dir = helpers.only_run(runs_root, "regression")
    assert helpers.read_json(run_dir / "run.json")["status"] == "failed"
    assert [row["status"] for row in _trials(run_dir)] == ["failed"] * 3


@pytest.mark.parametrize("recipe", sorted(r for r in registry.RECIPES
                                           if registry.info(r)["tunable"]))
def test_search_space_defaults_rebuild_the_config(recipe):
    """keras-tuner's guide smoke test: an empty HyperParameters() gives back the Config."""
    import keras_tuner

    module = registry.load(recipe)
    configs = [module.Config()]
    if "hidden_units" in module.Config.__dataclass_fields__:  # The dense recipes' deeper net.
        configs.append(module.Config(hidden_units=(32, 32, 32, 32, 16)))
    for config in configs:
        assert module.search_space(keras_tuner.HyperParameters(), config) == config
