"""Ctrl-C / SIGTERM during training, then --resume: a process boundary, so a subprocess.

The interrupted run must say 'interrupted', keep its best and last checkpoints and print the
command that resumes it; the resumed run must end with history epochs 0..N-1 exactly, and its
best checkpoint must still be the best epoch of the whole history (keras #17012).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import helpers
from dlref import config as configlib
from dlref import registry
from dlref.metrics import roc_auc
from dlref import resumable
from dlref.resumable import read_history
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


def test_a_best_epoch_kept_in_memory_survives_a_failed_epoch(tmp_path, runs_root, monkeypatch):
    """With writes spaced out (WritePace), the best epoch since the last round is in memory
    only; an error later in the fit (here a NaN, staged at epoch 3) must still write it."""
    from dlref import callbacks

    monkeypatch.setattr(callbacks, "WRITE_SHARE", 1e-12)  # No round after the first epoch.
    real = callbacks.NanStop.on_epoch_end

    def diverge(self, epoch, logs=None):
        real(self, epoch, logs)
        if epoch == 2:
            raise RuntimeError("NaN or Inf loss encountered in epoch 3 (staged).")

    monkeypatch.setattr(callbacks.NanStop, "on_epoch_end", diverge)
    data = helpers.regression_csv(tmp_path / "r.csv", rows=120)
    result = helpers.invoke("train", "regression", "--data", data, "--target", "y",
                            "--epochs", 6, "--set", "batch_size=8")
    helpers.assert_user_error(result, "diverged")
    run_dir = helpers.run_folders(runs_root, "regression")[0]
    manifest = helpers.read_json(run_dir / "run.json")
    values = [row["val_loss"] for row in read_history(run_dir / "history.csv")]
    assert len(values) == 3 and values[2] < values[0]  # The best epoch is a pending one.
    assert _validation_score(run_dir, "regression", manifest) == pytest.approx(min(values),
                                                                               rel=1e-4)


def test_resume_of_something_that_is_not_a_run(tmp_path):
    helpers.assert_user_error(helpers.invoke("train", "--resume", tmp_path), "not a dlref run")
    helpers.assert_user_error(helpers.invoke("train", "--resume", "missing-run"), "No run")


# --- A resumed run is the run an uninterrupted one would have been ---------------------------


def _popen_train(tmp_path, runs_root, *args):
    env = {**os.environ, "DLREF_RUNS_DIR": str(runs_root), "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "dlref.cli", "train", *map(str, args)],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _history(run_dir):
    return read_history(run_dir / "history.csv")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "kill-9"])
def test_resume_reproduces_the_uninterrupted_run(signum, tmp_path, runs_root):
    """Dropout and early stopping included: same epochs, same losses, same stopping epoch."""
    data = helpers.regression_csv(tmp_path / "r.csv", rows=240, noise=1.0)
    args = ["regression", "--data", data, "--target", "y", "--epochs", 80,
            "--set", "dropout_rate=0.3", "--set", "batch_size=8",
            "--set", "early_stopping_patience=3", "--set", "hidden_units=(64,64)",
            "--set", "learning_rate=0.0003"]
    helpers.assert_ok(helpers.invoke("train", *args, "--name", "whole"))
    whole = _history(helpers.run_folders(runs_root, "regression")[0])
    assert 8 < len(whole) < 80, len(whole)  # It stopped early, late enough to interrupt it before.

    process = _popen_train(tmp_path, runs_root, *args, "--name", "cut")
    cut = next(p for p in _wait_until(process, runs_root, 3) if p.name.endswith("-cut"))
    process.send_signal(signum)
    process.communicate(timeout=60)
    # A kill may beat the backup of the last epoch, or (WritePace) several epochs' on epochs
    # this short.
    done = resumable.backup_epoch(cut / "checkpoints" / "backup")
    assert 3 <= len(_history(cut)) < len(whole) and done >= 1
    if signum == signal.SIGKILL:
        assert helpers.read_json(cut / "run.json")["status"] == "running"  # Nobody said so.
        stale = cut / "checkpoints" / ".best.keras.ab12cd34.tmp.keras"
        stale.write_bytes(b"half a model")  # What a kill during a save leaves.
    result = helpers.invoke("train", "--resume", "cut")
    helpers.assert_ok(result)
    assert f"after epoch {done} of 80" in result.output
    assert f"Stopped at epoch {len(whole)}" in result.output
    resumed = _history(cut)
    assert [row["epoch"] for row in resumed] == [row["epoch"] for row in whole]
    for ours, theirs in zip(resumed, whole, strict=True):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)
        assert ours["val_loss"] == pytest.approx(theirs["val_loss"], rel=1e-5)
    assert not list(cut.rglob("*.tmp*"))


def _wait_until(process, runs_root, epochs, timeout=120):
    """Run folders once one of them has `epochs` rows of history."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        folders = helpers.run_folders(runs_root)
        if any(_history_rows(f) >= epochs for f in folders if f.name.endswith("-cut")):
            return folders
        if process.poll() is not None:
            pytest.fail(f"training ended early:\n{process.communicate()}")
        time.sleep(0.02)
    process.kill()
    pytest.fail(f"no {epochs} epochs in {timeout} s")


# --- One process per run folder; options that cannot apply ----------------------------------


def _interrupted_copy(trained, tmp_path, fit_done=False):
    run_dir = tmp_path / "runs" / "regression" / trained["regression"]["run"].name
    shutil.copytree(trained["regression"]["run"], run_dir)
    manifest = helpers.read_json(run_dir / "run.json")
    manifest.update(status="interrupted", fit_done=fit_done)
    (run_dir / "run.json").write_text(json.dumps(manifest))
    backup = run_dir / "checkpoints" / "backup"  # What a stop after epoch 2 leaves.
    backup.mkdir(parents=True)
    (backup / "epoch-00002.weights.h5").write_bytes(b"never read by these tests")
    (backup / "training_metadata.json").write_text(
        json.dumps({"epoch": 2, "weights": "epoch-00002.weights.h5"}))
    return run_dir


def test_a_run_in_use_is_refused(trained, tmp_path):
    from dlref import runs

    run_dir = _interrupted_copy(trained, tmp_path)
    with runs.locked(run_dir):
        result = helpers.invoke("train", "--resume", run_dir)
        helpers.assert_user_error(result, "in use by dlref process", str(os.getpid()))
        assert "Resuming" not in result.output
    assert helpers.read_json(run_dir / "run.json")["status"] == "interrupted"
    with runs.locked(run_dir):  # Released: the same process takes it again.
        assert str(os.getpid()) in (run_dir / ".lock").read_text()


def test_a_backup_that_cannot_be_read_builds_the_model_in_full(trained, tmp_path, monkeypatch):
    # build_model is told that a backup will overwrite its weights (transfer then skips its
    # pretraining); when no backup can be read, the model is built again without that.
    from dlref.data import WEIGHTS_FROM_BACKUP
    from dlref.recipes import regression

    told, build = [], regression.build_model

    def recording(config, data):
        told.append(data.extra.get(WEIGHTS_FROM_BACKUP))
        return build(config, data)

    monkeypatch.setattr(regression, "build_model", recording)
    run_dir = _interrupted_copy(trained, tmp_path)
    (run_dir / "history.csv").write_text((run_dir / "history.csv").read_text().splitlines()[0]
                                         + "\n")  # No epoch done: the backup was all there was.
    result = helpers.invoke("train", "--resume", run_dir)
    helpers.assert_ok(result)
    assert told == [True, False]
    assert "no backup in" in result.output and result.output.count("could be read") == 1
    assert helpers.read_json(run_dir / "run.json")["status"] == "completed"


@pytest.mark.parametrize("option", [["--set", "learning_rate=0.5"], ["--data", "/nowhere.csv"],
                                    ["--name", "zzz"], ["--seed", "3"],
                                    ["--strategy", "mirrored"], ["--drop", "x1"],
                                    ["--seed", "0"], ["--max-categories", "0"]])
def test_resume_refuses_options_it_would_ignore(option):
    result = helpers.invoke("train", "--resume", "any-run", *option)
    helpers.assert_user_error(result, "--resume continues a run", "cannot apply")


def test_resume_refuses_fewer_epochs_than_done(trained, tmp_path):
    run_dir = _interrupted_copy(trained, tmp_path)
    helpers.assert_user_error(helpers.invoke("train", "--resume", run_dir, "--epochs", 1),
                              "has trained 2 epochs, more than --epochs 1", "new total")
    # The run's own recipe may be named; another one is refused.
    helpers.assert_user_error(helpers.invoke("train", "binary", "--resume", run_dir),
                              "is a regression run, not binary")
    helpers.assert_user_error(helpers.invoke("train", "regression", "--resume", run_dir,
                                             "--epochs", 1), "has trained 2 epochs")
    fresh = _interrupted_copy(trained, tmp_path / "fresh")
    shutil.rmtree(fresh / "checkpoints" / "backup")  # Stopped before its first epoch ended.
    helpers.assert_user_error(helpers.invoke("train", "--resume", fresh, "--epochs", 0),
                              "epochs must be at least 1")
    assert helpers.read_json(fresh / "run.json")["status"] == "interrupted"
    over = _interrupted_copy(trained, tmp_path / "other", fit_done=True)
    helpers.assert_user_error(helpers.invoke("train", "--resume", over, "--epochs", 9),
                              "Training of", "is over")


# --- Signals after training: the run is finished first ---------------------------------------


def test_signals_during_the_evaluation(tmp_path, runs_root):
    """One SIGTERM after fit: the run completes. Two: interrupted, and --resume finishes it."""
    data = helpers.binary_csv(tmp_path / "b.csv", rows=400)
    for count in (1, 2):
        name = f"eval{count}"
        process = _popen_train(tmp_path, runs_root, "binary", "--data", data, "--target",
                               "churned", "--epochs", 2, "--name", name)
        run_dir = _wait_for_fit(process, runs_root, name)
        process.send_signal(signal.SIGTERM)
        first = _read_until(process.stderr, "training is over")
        if count == 2:
            process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
        err = first + err
        assert "Traceback" not in err, err
        assert "training is over; finishing the evaluation and saving first" in err
        manifest = helpers.read_json(run_dir / "run.json")
        if count == 1:
            assert process.returncode == 0 and manifest["status"] == "completed", (out, err)
            continue
        assert process.returncode == 130 and manifest["status"] == "interrupted", (out, err)
        assert "stopped by a second SIGTERM" in err
        assert "Training is over; the resume evaluates and saves the model." in err
        result = helpers.invoke("train", "--resume", run_dir)
        helpers.assert_ok(result)
        assert "training is over; evaluating and saving" in result.output
        assert helpers.read_json(run_dir / "run.json")["status"] == "completed"


def _wait_for_fit(process, runs_root, name, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for folder in helpers.run_folders(runs_root):
            if folder.name.endswith(name) and (folder / "run.json").is_file():
                try:
                    if helpers.read_json(folder / "run.json").get("fit_done"):
                        return folder
                except ValueError:
                    pass  # Caught between two writes of the file; read it again.
        if process.poll() is not None:
            pytest.skip("the run finished before the test could signal it")
        time.sleep(0.005)
    process.kill()
    pytest.fail("training did not finish")


def test_an_unwritable_checkpoints_folder_fails_before_training(trained, tmp_path, monkeypatch):
    """As root (CI) permission bits do not stop writes, so the refusal is simulated."""
    import tempfile

    run_dir = _interrupted_copy(trained, tmp_path)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    real = tempfile.TemporaryFile

    def refuse(*args, dir=None, **kwargs):
        if dir is not None and str(dir).endswith("checkpoints"):
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    result = helpers.invoke("train", "--resume", run_dir)
    helpers.assert_user_error(result, "Cannot write in", "checkpoints", "Permission denied")
    assert "Resuming" not in result.output
    assert helpers.read_json(run_dir / "run.json")["status"] == "interrupted"


def test_a_double_ctrl_c_says_what_is_on_disk(tmp_path, runs_root):
    """Two SIGINTs stop at once; the message names only checkpoints that exist."""
    data = helpers.binary_csv(tmp_path / "b.csv", rows=1500)  # Epochs of about a second.
    # Timed for TensorFlow's steps (a JAX epoch is shorter); the signal handling is the same.
    process = _popen_train(tmp_path, runs_root, "binary", "--data", data, "--target", "churned",
                           "--epochs", 50, "--set", "batch_size=4", "--name", "cut",
                           "--backend", "tensorflow")
    run_dir = next(p for p in _wait_until(process, runs_root, 2) if p.name.endswith("-cut"))
    time.sleep(0.3)  # Inside epoch 3, away from its end.
    process.send_signal(signal.SIGINT)
    # Two signals before Python runs its handler count as one: wait for the first's message.
    first = _read_until(process.stderr, "finishing this epoch")
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=90)
    err = first + err
    assert process.returncode == 130 and "Traceback" not in err, (out, err)
    assert "stopped by a second SIGINT" in err
    manifest = helpers.read_json(run_dir / "run.json")
    assert manifest["status"] == "interrupted"
    epochs = len(read_history(run_dir / "history.csv"))
    # Stopped at once: the backup may be a few epochs behind the history (WritePace).
    done = resumable.backup_epoch(run_dir / "checkpoints" / "backup")
    assert 1 <= done <= epochs and f"the resume continues after epoch {done}." in err
    assert ("last.keras" in err) == (run_dir / "checkpoints" / "last.keras").is_file()
    assert "best.keras (epoch " in err and (run_dir / "checkpoints" / "best.keras").is_file()
    resumed = _popen_train(tmp_path, runs_root, "--resume", run_dir, "--epochs", epochs + 1)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, (out, err)
    assert helpers.history_epochs(run_dir) == list(range(epochs + 1))


def test_a_signal_in_the_last_epoch_still_finishes_the_run(tmp_path, runs_root):
    """Every epoch has run once the signal's epoch ends: the run completes, as the message
    'finishing this epoch, then saving' promises."""
    data = helpers.regression_csv(tmp_path / "r.csv", rows=600)
    # Timed for TensorFlow's steps (a JAX epoch is shorter); the signal handling is the same.
    process = _popen_train(tmp_path, runs_root, "regression", "--data", data, "--target", "y",
                           "--epochs", 3, "--set", "batch_size=1", "--name", "cut",
                           "--backend", "tensorflow")
    run_dir = next(p for p in _wait_until(process, runs_root, 2) if p.name.endswith("-cut"))
    time.sleep(0.3)  # Past epoch 2's callbacks: epoch 3 of about a second is under way.
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=90)
    assert "finishing this epoch" in err and "epoch 3/3" in out, (out, err)
    assert process.returncode == 0, (out, err)
    manifest = helpers.read_json(run_dir / "run.json")
    assert manifest["status"] == "completed" and manifest["epochs_completed"] == 3
    assert (run_dir / "model.keras").is_file()


def _read_until(stream, text):
    """Lines of a child's output up to and including the first that holds `text`."""
    lines = []
    for line in iter(stream.readline, ""):
        lines.append(line)
        if text in line:
            break
    return "".join(lines)
