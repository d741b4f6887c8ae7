"""--strategy multi-worker: two processes on 127.0.0.1, TF_CONFIG errors, resume in one process.

The two-process tests are where a process boundary is the thing under test, so they run the CLI
as subprocesses, each with its own TF_CONFIG, working folder and temp folder.
"""

import json
import os
import re
import socket
import subprocess
import sys

import pytest

import helpers


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def tf_config(addresses, index, kind="worker"):
    return json.dumps({"cluster": {"worker": addresses}, "task": {"type": kind, "index": index}})


def start(args, tmp_path, role, config):
    """A `dlref` subprocess with its own working and temp folder (tmp_path/role)."""
    home = tmp_path / role
    (home / "tmp").mkdir(parents=True)
    env = {**os.environ, "TF_CONFIG": config, "TF_CPP_MIN_LOG_LEVEL": "3",
           "TMPDIR": str(home / "tmp")}
    return subprocess.Popen([sys.executable, "-m", "dlref.cli", *map(str, args)], cwd=home,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(processes, timeout=150):
    """Waits for every process; kills all of them when one hangs. Returns their outputs."""
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=timeout)[0])
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return outputs


def epoch_lines(output):
    """The per-epoch lines without their seconds: the same on every process of one run."""
    return [re.sub(r"\s+\([\d.]+s\)$", "", line) for line in output.splitlines()
            if line.startswith("epoch ")]


def train_two_workers(tmp_path, recipe, data, target):
    root = tmp_path / "runs"
    addresses = [f"127.0.0.1:{port}" for port in free_ports(2)]
    args = ["train", recipe, "--data", data, "--target", target, "--epochs", 2,
            "--strategy", "multi-worker", "--backend", "tensorflow", "--runs-dir", root]
    processes = [start(args, tmp_path, role, tf_config(addresses, index))
                 for index, role in enumerate(("chief", "worker"))]
    chief, worker = finish(processes)
    assert processes[0].returncode == 0, chief
    assert processes[1].returncode == 0, worker
    return root, chief, worker


def check_one_run(tmp_path, root, recipe, chief, worker):
    run_dir = helpers.only_run(root, recipe)
    manifest = helpers.read_json(run_dir / "run.json")
    assert manifest["status"] == "completed", manifest
    assert (manifest["strategy"], manifest["workers"], manifest["role"]) == ("multi-worker", 2,
                                                                             "chief")
    assert manifest["backend"] == "tensorflow"
    assert manifest["epochs_completed"] == 2
    assert helpers.history_epochs(run_dir) == [0, 1]
    # Both processes trained the same epochs in step: the same metrics, printed by each.
    assert len(epoch_lines(chief)) == 2, chief
    assert epoch_lines(worker) == epoch_lines(chief), (chief, worker)
    assert "the chief writes the run folder" in worker
    assert (run_dir / "model.keras").is_file() and (run_dir / "metrics.json").is_file()
    # Everything under the runs root is the chief's run; the worker wrote nothing anywhere.
    assert all(path == run_dir or run_dir in path.parents
               for path in root.rglob("*") if path.is_file()), list(root.rglob("*"))
    assert sorted(p.name for p in (tmp_path / "worker").rglob("*")) == ["tmp"]
    return run_dir, manifest


def test_two_workers_train_one_run_that_the_chief_writes(tmp_path, regression_csv):
    root, chief, worker = train_two_workers(tmp_path, "regression", regression_csv, "y")
    run_dir, manifest = check_one_run(tmp_path, root, "regression", chief, worker)
    metrics = helpers.read_json(run_dir / "metrics.json")
    assert set(metrics["metrics"]) >= {"rmse", "mae"}
    assert "worker 0 of 2" in chief and "worker 1 of 2" in worker


@pytest.mark.slow
def test_two_workers_train_a_binary_run_whose_roc_auc_callback_predicts(tmp_path, binary_csv):
    """RocAuc predicts on the validation split every epoch, on every worker: the two agree on
    val_roc_auc (it picks the best checkpoint), and neither hangs on a collective."""
    root, chief, worker = train_two_workers(tmp_path, "binary", binary_csv, "churned")
    run_dir, _ = check_one_run(tmp_path, root, "binary", chief, worker)
    assert all("val_roc_auc" in line for line in epoch_lines(worker))
    assert (run_dir / "plots" / "roc_curve.png").is_file()


BAD_CONFIGS = {
    "": "needs TF_CONFIG",
    "{cluster": "not valid JSON",
    '{"task": {"type": "worker", "index": 0}}': 'no "cluster" table',
    '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 1}}':
        "lists 1 worker task(s)",
    '{"cluster": {"worker": ["127.0.0.1"]}, "task": {"type": "worker", "index": 0}}':
        '"host:port"',
    '{"cluster": {"worker": ["127.0.0.1:1"], "ps": ["127.0.0.1:2"]}, '
    '"task": {"type": "worker", "index": 0}}': "lists ps",
    '{"cluster": {"worker": ["127.0.0.1:1"]}}': '"task" must say',
}


@pytest.mark.parametrize("config", list(BAD_CONFIGS))
def test_a_bad_tf_config_is_refused_before_a_run_folder_exists(config, regression_csv,
                                                                runs_root, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", config)
    result = helpers.invoke("train", "regression", "--data", regression_csv, "--target", "y",
                            "--strategy", "multi-worker")
    helpers.assert_user_error(result, BAD_CONFIGS[config])
    assert helpers.run_folders(runs_root) == []


def test_multi_worker_refuses_an_explicit_jax_backend(regression_csv, runs_root, monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config(["127.0.0.1:1"], 0))
    result = helpers.invoke("train", "regression", "--data", regression_csv, "--target", "y",
                            "--strategy", "multi-worker", "--backend", "jax")
    helpers.assert_user_error(result, "tf.distribute", "--backend jax")
    assert helpers.run_folders(runs_root) == []


def test_a_multi_worker_run_resumes_in_one_process_only(regression_csv, runs_root, monkeypatch):
    """A run whose manifest says multi-worker (the chief's folder) continues without TF_CONFIG,
    on the default strategy, and is refused with it."""
    helpers.assert_ok(helpers.invoke("train", "regression", "--data", regression_csv,
                                     "--target", "y", "--epochs", 1))
    run_dir = helpers.only_run(runs_root)
    manifest = helpers.read_json(run_dir / "run.json")
    manifest.update(strategy="multi-worker", workers=2, role="chief", status="interrupted")
    (run_dir / "run.json").write_text(json.dumps(manifest), encoding="utf-8")
    monkeypatch.setenv("TF_CONFIG", tf_config(["127.0.0.1:1", "127.0.0.1:2"], 0))
    helpers.assert_user_error(helpers.invoke("train", "--resume", run_dir),
                              "env -u TF_CONFIG dlref train --resume")
    monkeypatch.delenv("TF_CONFIG")
    helpers.assert_ok(helpers.invoke("train", "--resume", run_dir))
    resumed = helpers.read_json(run_dir / "run.json")
    assert (resumed["status"], resumed["strategy"], resumed["resumed_alone"]) == (
        "completed", "default", True)
