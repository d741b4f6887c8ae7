"""Run folders: safe names, unique atomic creation, manifests, finding and listing runs."""

import json
import os
import subprocess
import sys
import threading

import pytest

import helpers
from dlref import runs
from dlref.errors import DlrefError

BAD_NAMES = ["a/b", "..", "../escape", "x..y", ".", "with space", "$HOME", "a" * 65, "",
             "tab\tname", "semi;colon", "star*", "back\\slash", "ünïcode"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_run_names_are_refused(name):
    with pytest.raises(DlrefError, match="Invalid run name"):
        runs.validate_name(name)


@pytest.mark.parametrize("name", ["exp1", "lr-0.001_v2", "a" * 64, "A.b-C_d", ".x"])
def test_good_run_names_pass(name):
    assert runs.validate_name(name) == name


@pytest.mark.parametrize("name", ["a/b", "..", "with space", "$HOME", "a" * 65])
def test_train_with_a_bad_name_exits_2_and_creates_nothing(name, regression_csv, runs_root):
    result = helpers.invoke("train", "regression", "--data", regression_csv, "--target", "y",
                            "--epochs", 1, "--name", name)
    helpers.assert_user_error(result, "Invalid run name")
    assert not runs_root.exists() or helpers.run_folders(runs_root) == []
    assert not (runs_root.parent / "b").exists()


def test_good_name_is_the_folder_suffix(regression_csv, runs_root):
    result = helpers.invoke("train", "regression", "--data", regression_csv, "--target", "y",
                            "--epochs", 1, "--name", "lr-0.001_v2")
    helpers.assert_ok(result)
    run_dir = helpers.only_run(runs_root, "regression")
    assert run_dir.name.endswith("-lr-0.001_v2")
    day, time_of_day, token, _ = run_dir.name.split("-", 3)
    assert (len(day), len(time_of_day), len(token)) == (8, 6, 4)
    assert helpers.read_json(run_dir / "run.json")["run"] == run_dir.name


def test_two_runs_never_share_a_folder(tmp_path):
    folders = [runs.create_run(tmp_path, "regression", "same") for _ in range(30)]
    assert len(set(folders)) == 30 and all(f.is_dir() for f in folders)


def test_concurrent_creation_gives_distinct_folders(tmp_path):
    created = []

    def create():
        for _ in range(10):
            created.append(runs.create_run(tmp_path, "binary"))

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(created) == len(set(created)) == 40


class _FixedClock:
    @staticmethod
    def now():
        from datetime import datetime

        return datetime(2026, 1, 2, 3, 4, 5)


def test_a_taken_folder_is_retried_not_reused(tmp_path, monkeypatch):
    tokens = iter(["aaaa", "aaaa", "bbbb"])
    monkeypatch.setattr(runs, "datetime", _FixedClock)
    monkeypatch.setattr(runs.secrets, "token_hex", lambda n: next(tokens))
    first = runs.create_run(tmp_path, "regression")
    second = runs.create_run(tmp_path, "regression")
    assert first.name == "20260102-030405-aaaa"
    assert second.name == "20260102-030405-bbbb"


def test_gives_up_with_a_clear_error_when_every_name_is_taken(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "datetime", _FixedClock)
    monkeypatch.setattr(runs.secrets, "token_hex", lambda n: "cafe")
    runs.create_run(tmp_path, "regression")
    with pytest.raises(DlrefError, match="unique run folder"):
        runs.create_run(tmp_path, "regression")


def test_manifest_round_trip_and_update(tmp_path):
    run_dir = runs.create_run(tmp_path, "binary")
    runs.new_manifest(run_dir, "train", "binary", ["dlref", "train"], seed=3)
    manifest = runs.read_manifest(run_dir)
    assert manifest["status"] == "running" and manifest["pid"] == os.getpid()
    assert manifest["run"] == run_dir.name and manifest["seed"] == 3
    runs.update_manifest(run_dir, status="completed")
    assert runs.read_manifest(run_dir)["status"] == "completed"
    assert [p.name for p in run_dir.iterdir()] == ["run.json"]  # No temp files left behind.


def test_find_run_by_path_and_by_name(tmp_path, monkeypatch):
    run_dir = runs.create_run(tmp_path, "binary", "findme")
    runs.new_manifest(run_dir, "train", "binary", [])
    assert runs.find_run(str(run_dir), tmp_path) == run_dir
    assert runs.find_run(run_dir.name, tmp_path) == run_dir
    with pytest.raises(DlrefError, match="No run 'nothing'"):
        runs.find_run("nothing", tmp_path)
    assert runs.find_run("findme", tmp_path) == run_dir  # The --name alone.
    newer = runs.create_run(tmp_path, "binary", "findme")
    runs.new_manifest(newer, "train", "binary", [])
    assert runs.find_run("findme", tmp_path) == newer  # The newest of that name.
    with pytest.raises(DlrefError, match="not a dlref run"):
        runs.find_run(str(tmp_path), tmp_path)
    # A folder of that name here (the data: --data findme --name findme): the run wins.
    (tmp_path / "here" / "findme").mkdir(parents=True)
    (tmp_path / "here" / "faces").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    assert runs.find_run("findme", tmp_path) == newer
    with pytest.raises(DlrefError, match="faces is a folder but not a dlref run .* no run "
                                         "under .* has that name"):
        runs.find_run("faces", tmp_path)


def test_list_runs_marks_dead_running_runs_as_killed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    alive_dir = runs.create_run(tmp_path, "regression", "alive")
    runs.new_manifest(alive_dir, "train", "regression", [])
    dead_dir = runs.create_run(tmp_path, "binary", "dead")
    runs.new_manifest(dead_dir, "train", "binary", [])
    runs.update_manifest(dead_dir, pid=int(dead.stdout))
    (tmp_path / "binary" / "garbage").mkdir()
    (tmp_path / "binary" / "garbage" / "run.json").write_text("{not json")
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        runs.update_manifest(alive_dir, pid=sleeper.pid)
        found = {m["run"]: m for m in runs.list_runs(tmp_path)}
    finally:
        sleeper.kill()
        sleeper.wait()
    assert set(found) == {alive_dir.name, dead_dir.name}
    assert found[alive_dir.name]["status"] == "running"
    assert found[dead_dir.name]["status"] == "killed"
    assert [m["recipe"] for m in runs.list_runs(tmp_path, "binary")] == ["binary"]


# --- `dlref runs` ----------------------------------------------------------------------------


def test_runs_table_and_json(trained):
    root = trained["binary"]["root"]
    result = helpers.invoke("runs", "--runs-dir", root)
    helpers.assert_ok(result)
    header, *rows = result.output.strip().splitlines()
    assert header.split() == ["recipe", "run", "data", "status", "epochs", "monitored", "test",
                              "when"]
    for recipe, found in trained.items():
        row = next(r for r in rows if found["run"].name in r)
        assert row.split()[:5] == [recipe, found["run"].name, found["data"].name, "completed", "2"]
    as_json = helpers.invoke("runs", "--runs-dir", root, "--json")
    helpers.assert_ok(as_json)
    listed = json.loads(as_json.output)
    assert {(m["recipe"], m["run"], m["status"]) for m in listed} == {
        (recipe, found["run"].name, "completed") for recipe, found in trained.items()}
    only = json.loads(helpers.invoke("runs", "binary", "--runs-dir", root, "--json").output)
    assert [m["recipe"] for m in only] == ["binary"]
    assert only[0]["source"] == {"data": str(trained["binary"]["data"].resolve()),
                                 "target": "churned"}


def test_runs_reads_dlref_runs_dir(trained, monkeypatch):
    monkeypatch.setenv("DLREF_RUNS_DIR", str(trained["binary"]["root"]))
    listed = json.loads(helpers.invoke("runs", "--json").output)
    assert len(listed) == len(trained)


def test_runs_with_no_runs_says_how_to_start(runs_root):
    result = helpers.invoke("runs")
    helpers.assert_ok(result)
    assert "No runs under" in result.output and "dlref train" in result.output
    assert json.loads(helpers.invoke("runs", "--json").output) == []
