"""Ctrl-C / SIGTERM during training, then --resume: a process boundary, so a subprocess.

The interrupted run must say 'interrupted', keep its best and last checkpoints and print the
command that resumes it; the resumed run must end with history epochs 0..N-1 exactly, and its
best checkpoint must still be the best epoch of the whole history (keras #17012).
"""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import helpers
from dlref import config as configlib
from dlref import registry
from dlref.callbacks import read_history, roc_auc
from dlref.data import Source

CASES = {
    # A target of pure noise, a wide net and a large step: validation loss is best early and
    # worse after, so the epochs after the resume must not replace the best checkpoint.
    "regression": (lambda d: helpers.regression_csv(d / "r.csv", signal=0.0, noise=1.0), "y",
                   ["learning_rate=0.05", "hidden_units=(64,64)"]),
    "binary": (lambda d: helpers.binary_csv(d / "b.csv"), "churned", []),
}


def _history_rows(run_dir):
    path = run_dir / "history.csv" if run_dir else None
    return len(read_history(path)) if path and path.is_file() else 0


def _start(tmp_path, runs_root, recipe):
    write, target, settings = CASES[recipe]
    data = write(tmp_path)
    args = ["-m", "dlref.cli", "train", recipe, "--data", str(data), "--target", target,
            "--epochs", "300", "--set", "batch_size=4", "--set", "early_stopping_patience=0",
            "--name", "resumable"]
    for setting in settings:
        args += ["--set", setting]
    env = {**os.environ, "DLREF_RUNS_DIR": str(runs_root), "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, *args], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return process, data


def _set_history_value(run_dir, epoch, key, value):
    import csv

    path = run_dir / "history.csv"
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    rows[epoch][key] = repr(value)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def _wait_for_epochs(process, runs_root, recipe, count, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        folders = helpers.run_folders(runs_root, recipe)
        if folders and _history_rows(folders[0]) >= count:
            return folders[0]
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"training ended early (exit {process.returncode}):\n{out}\n{err}")
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"no {count} epochs in {timeout} s")


def _validation_score(run_dir, recipe, manifest):
    """The monitored metric of checkpoints/best.keras, recomputed on the run's validation split."""
    import keras

    module = registry.load(recipe)
    defaults = configlib.field_defaults(module.Config)
    config = module.Config(**configlib.merge(defaults, [("run.json", manifest["config"])]))
    data = module.load_data(config, Source(**manifest["source"]))
    model = keras.saving.load_model(run_dir / "checkpoints" / "best.keras")
    x_val, y_val = data.val
    if module.MONITOR == "val_loss":
        return float(model.evaluate(x_val, y_val, batch_size=config.batch_size, verbose=0)[0])
    return roc_auc(y_val, model.predict(x_val, verbose=0))


@pytest.mark.parametrize("signum, recipe", [(signal.SIGINT, "regression"),
                                            (signal.SIGTERM, "binary")],
                         ids=["SIGINT-regression", "SIGTERM-binary"])
def test_interrupt_then_resume(signum, recipe, tmp_path, runs_root):
    process, data = _start(tmp_path, runs_root, recipe)
    run_dir = _wait_for_epochs(process, runs_root, recipe, 2)
    process.send_signal(signum)
    try:
        out, err = process.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail("training did not stop after the signal")

    assert process.returncode == 130, (out, err)
    assert "Traceback" not in err, err
    manifest = helpers.read_json(run_dir / "run.json")
    assert manifest["status"] == "interrupted"
    assert signal.Signals(signum).name in manifest["error"]
    assert f"dlref train --resume {run_dir}" in err
    for name in ("best.keras", "last.keras"):
        assert (run_dir / "checkpoints" / name).stat().st_size > 0
    assert (run_dir / "checkpoints" / "backup" / "training_metadata.json").is_file()
    stopped_at = helpers.history_epochs(run_dir)
    assert stopped_at == list(range(len(stopped_at))) and len(stopped_at) >= 2
    assert manifest["epochs_completed"] == len(stopped_at)
    assert not (run_dir / "model.keras").exists()

    # An interrupted run lists as such, and cannot be evaluated before it finishes.
    listed = helpers.invoke("runs", "--json")
    assert '"status": "interrupted"' in listed.output
    helpers.assert_user_error(helpers.invoke("evaluate", run_dir), "no model.keras",
                              "--resume")

    best_before = (run_dir / "checkpoints" / "best.keras").read_bytes()
    if recipe == "binary":
        # Resuming on changed data is refused and leaves the run as it was.
        original = data.read_bytes()
        data.write_bytes(original.replace(b"yes", b"no", 1))
        helpers.assert_user_error(helpers.invoke("train", "--resume", run_dir), "data changed")
        assert helpers.read_json(run_dir / "run.json")["status"] == "interrupted"
        data.write_bytes(original)
        # Keras' ModelCheckpoint forgets its best score across a resume (keras #17012). Make
        # the first epoch unbeatable (ROC-AUC 1.0; a new best must be strictly greater): no
        # resumed epoch may then replace the best checkpoint.
        _set_history_value(run_dir, 0, "val_roc_auc", 1.0)

    total = len(stopped_at) + 2
    result = helpers.invoke("train", "--resume", run_dir, "--epochs", total)
    helpers.assert_ok(result)
    assert f"after epoch {len(stopped_at)}" in result.output
    assert helpers.history_epochs(run_dir) == list(range(total))
    manifest = helpers.read_json(run_dir / "run.json")
    assert manifest["status"] == "completed" and manifest["epochs_completed"] == total
    assert manifest["config"]["epochs"] == total
    assert (run_dir / "model.keras").is_file()
    assert not (run_dir / "checkpoints" / "backup").exists()

    # The best checkpoint is the best epoch of the whole history, before and after the resume.
    monitor, mode = manifest["monitor"], manifest["mode"]
    values = [row[monitor] for row in read_history(run_dir / "history.csv")]
    best = (np.nanmin if mode == "min" else np.nanmax)(values)
    assert manifest["best"]["value"] == pytest.approx(best)
    if recipe == "binary":
        assert manifest["best"] == {"epoch": 1, "value": 1.0}
        assert (run_dir / "checkpoints" / "best.keras").read_bytes() == best_before
    else:
        assert _validation_score(run_dir, recipe, manifest) == pytest.approx(best, rel=1e-4)

    helpers.assert_user_error(helpers.invoke("train", "--resume", run_dir), "already completed")


def test_resume_of_something_that_is_not_a_run(tmp_path):
    helpers.assert_user_error(helpers.invoke("train", "--resume", tmp_path), "not a dlref run")
    helpers.assert_user_error(helpers.invoke("train", "--resume", "missing-run"), "No run")
