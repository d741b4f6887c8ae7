"""Faults from review (issue 7): no orphan processes, clear errors for bad runs folders and
damaged or unsafe model files, symbolic links in the runs root refused, bind addresses, and
the minimum versions pyproject.toml declares.

Stopping `dlref tensorboard` and the chief's bind address cross a process boundary, so those
tests start `python -m dlref.cli` in a subprocess (Linux: they read /proc); the rest run
in-process on a copy of the shared `trained` runs.
"""

import contextlib
import errno
import importlib.metadata
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import helpers
from dlref import saved
from dlref.errors import DlrefError
from dlref.tuning import distributed

LINUX = sys.platform.startswith("linux")
ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}


# --- Processes: what dlref starts stops with it ------------------------------------------------


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _children(pid):
    """Pids of the live processes whose parent is `pid` (from /proc/<pid>/stat)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
            if int(parent) == pid and state != "Z":
                found.append(int(stat.parent.name))
    return found


def _alive(pid):
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _address(hex_address):
    """An address as /proc/net/tcp{,6} writes it: 32-bit words in host byte order."""
    words = [bytes.fromhex(hex_address[i:i + 8]) for i in range(0, len(hex_address), 8)]
    packed = b"".join(word[::-1] if sys.byteorder == "little" else word for word in words)
    address = ipaddress.ip_address(packed)
    return str(getattr(address, "ipv4_mapped", None) or address)  # gRPC: ::ffff:127.0.0.1.


def _listening(port):
    """The local addresses on which some process listens on TCP `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, _, hex_port = local.rpartition(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN.
                    found.add(_address(address))
    return found


def _wait_for(condition, process=None, timeout=90):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        if process is not None and process.poll() is not None:
            pytest.fail(f"exited {process.returncode}:\n{process.stdout.read()}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)
    return found


def _start(args, cwd):
    return subprocess.Popen([sys.executable, "-m", "dlref.cli", *map(str, args)], cwd=cwd,
                            env={**os.environ, **ENV}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def started(tmp_path):
    """Starts `dlref ARGS` in subprocesses and kills them, and the children they were seen to
    start, when the test ends, passed or failed: no orphans either way."""
    processes, children = [], []

    def start(*args):
        process = _start(args, tmp_path)
        processes.append(process)
        return process

    start.children = children
    yield start
    for process in processes:
        children.extend(_children(process.pid) if LINUX else [])
    for pid in children:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


@pytest.mark.skipif(not LINUX, reason="reads /proc")
# SIGTERM and SIGHUP take the path SIGINT takes (processes.run_child's one handler), but for the
# exit code: slow tests, each starting a TensorBoard server (about 7 s).
@pytest.mark.parametrize("signum", [
    pytest.param(signal.SIGTERM, marks=pytest.mark.slow), signal.SIGINT,
    pytest.param(signal.SIGHUP, marks=pytest.mark.slow), signal.SIGKILL])
def test_stopping_dlref_tensorboard_stops_its_server(signum, started, tmp_path):
    port = _free_port()
    process = started("tensorboard", tmp_path, "--port", port)
    (server,) = _wait_for(lambda: _children(process.pid), process)
    started.children.append(server)
    _wait_for(lambda: _listening(port), process)
    assert _listening(port) == {"127.0.0.1"}  # Loopback only, unless --host says otherwise.

    process.send_signal(signum)
    output, _ = process.communicate(timeout=30)
    assert "Traceback" not in output, output
    if signum != signal.SIGKILL:  # SIGKILL: the kernel's death signal stops the server.
        assert process.returncode == (0 if signum == signal.SIGINT else 128 + signum), output
    _wait_for(lambda: not _alive(server) and not _listening(port), timeout=30)


def test_tensorboard_passes_the_host_and_warns_off_loopback(tmp_path, monkeypatch):
    commands = []

    class Finished:
        """A TensorBoard that exits at once with status 0."""

        def __init__(self, command, **options):
            commands.append(command)
            self.pid, self.returncode = None, 0  # No pid: nothing real could be signalled.

        def wait(self, timeout=None):
            return 0

        def poll(self):
            return 0

    monkeypatch.setattr(subprocess, "Popen", Finished)
    helpers.assert_ok(helpers.invoke("tensorboard", tmp_path, "--port", 6123))
    result = helpers.invoke("tensorboard", tmp_path, "--host", "0.0.0.0")
    helpers.assert_ok(result)
    assert "no authentication" in result.output
    hosts = [command[command.index("--host") + 1] for command in commands]
    assert hosts == ["127.0.0.1", "0.0.0.0"]
    assert commands[0][commands[0].index("--port") + 1] == "6123"


@pytest.mark.skipif(not LINUX, reason="reads /proc")
def test_the_chief_oracle_listens_on_loopback_only(started, regression_csv):
    port = _free_port()
    chief = started("tune", "regression", "--data", regression_csv, "--target", "y",
                    "--max-epochs", 1, "--role", "chief", "--oracle", f"127.0.0.1:{port}")
    assert _wait_for(lambda: _listening(port), chief, timeout=180) == {"127.0.0.1"}


def test_the_oracle_binds_elsewhere_only_when_told(capsys):
    remote = distributed.Cluster(role="chief", oracle="0.0.0.0:8000")
    with pytest.raises(DlrefError, match="--allow-remote"):
        distributed.check(remote)
    allowed = distributed.Cluster(role="chief", oracle="0.0.0.0:8000", allow_remote=True)
    assert distributed.check(allowed) is allowed
    assert "no authentication" in capsys.readouterr().err
    local = distributed.Cluster(role="chief", oracle="127.0.0.1:8000")
    assert distributed.check(local).host == "127.0.0.1"


# --- The runs folder: a file, or not writable ---------------------------------------------------


def _train_args(csv):
    return ["train", "regression", "--data", csv, "--target", "y", "--epochs", 1]


def _tune_args(csv):
    return ["tune", "regression", "--data", csv, "--target", "y", "--max-epochs", 1]


@pytest.mark.parametrize("args", [_train_args, _tune_args])
@pytest.mark.parametrize("where", ["root", "recipe", "parent"])
def test_a_runs_dir_that_is_a_file_is_refused(args, where, tmp_path, regression_csv):
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me\n")
    root = {"root": notes, "recipe": tmp_path / "runs", "parent": notes / "runs"}[where]
    if where == "recipe":
        root.mkdir()
        shutil.copy(notes, root / "regression")
    result = helpers.invoke(*args(regression_csv), "--runs-dir", root)
    helpers.assert_user_error(result, "is a file, not a folder", "--runs-dir")
    assert str(notes if where != "recipe" else root / "regression") in result.output
    assert notes.read_text() == "keep me\n"


def test_dlref_runs_dir_naming_a_file_is_refused(tmp_path, monkeypatch, regression_csv):
    notes = tmp_path / "notes.txt"
    notes.write_text("keep me\n")
    monkeypatch.setenv("DLREF_RUNS_DIR", str(notes))
    result = helpers.invoke(*_train_args(regression_csv))
    helpers.assert_user_error(result, f"DLREF_RUNS_DIR ({notes}) is a file, not a folder")
    helpers.assert_user_error(helpers.invoke("runs"), "DLREF_RUNS_DIR")


@pytest.fixture
def read_only(monkeypatch):
    """Makes a folder read-only. chmod does not stop root, so when the tests run as root,
    mkdir below the folder fails the way the kernel fails it for other users."""
    folders = []

    def make(folder):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o555)
        folders.append(folder)
        if os.geteuid() == 0:
            mkdir = Path.mkdir

            def refused(self, *args, **kwargs):
                if self.parent.absolute() in folders and not self.exists():
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
                return mkdir(self, *args, **kwargs)

            monkeypatch.setattr(Path, "mkdir", refused)
        return folder

    yield make
    for folder in folders:
        folder.chmod(0o755)


@pytest.mark.parametrize("args", [_train_args, _tune_args])
@pytest.mark.parametrize("level", ["root", "recipe"])
def test_a_read_only_runs_folder_is_refused(args, level, read_only, runs_root, regression_csv):
    folder = read_only(runs_root if level == "root" else runs_root / "regression")
    result = helpers.invoke(*args(regression_csv))
    helpers.assert_user_error(result, "Cannot create a run folder", str(folder),
                              "Permission denied", "--runs-dir")
    assert list(folder.iterdir()) == []  # Refused before a run folder, so before training.


# --- Model files: damaged, or refused by Keras safe mode ---------------------------------------


@pytest.fixture
def run_copy(trained, runs_root):
    """A copy of the trained regression run in this test's runs root, safe to damage."""
    source = trained["regression"]["run"]
    copy = runs_root / "regression" / source.name
    shutil.copytree(source, copy)
    return copy


def _lambda_model(path):
    import keras

    inputs = keras.Input((3,))
    keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs)).save(path)


def _function_named(path, module, function):
    """The run's own model with an activation naming `module.function` in its config."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
    dense["config"]["activation"] = {"module": module, "class_name": "function",
                                     "config": function, "registered_name": "function"}
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)


def _hdf5_model(path):
    import keras

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.save(path.with_suffix(".h5"))
    path.with_suffix(".h5").replace(path)


def _other_zip(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not a model")


def _truncated(path):
    path.write_bytes(path.read_bytes()[:300])


BAD_MODELS = {
    "lambda": (_lambda_model, ["refused by Keras safe mode", "Lambda layer", "arbitrary code"]),
    "function": (lambda p: _function_named(p, "os", "system"),
                 ["refused by Keras safe mode", "os.system", "outside Keras"]),
    "hdf5": (_hdf5_model, ["HDF5", "not a .keras zip archive"]),
    "zip": (_other_zip, ["zip archive but not a Keras model", "no config.json"]),
    "truncated": (_truncated, ["not a .keras zip archive", "truncated"]),
}


@pytest.mark.parametrize("kind", sorted(BAD_MODELS))
def test_a_model_file_keras_refuses_gives_a_clear_error(kind, run_copy, tmp_path):
    make, words = BAD_MODELS[kind]
    model = run_copy / "model.keras"
    make(model)
    damaged = model.read_bytes()
    new_rows = helpers.regression_csv(tmp_path / "new.csv", categorical=True)
    for args in (["evaluate", run_copy], ["predict", run_copy, "--data", new_rows]):
        result = helpers.invoke(*args)
        helpers.assert_user_error(result, str(model), *words, "dlref only loads models it saved")
    assert model.read_bytes() == damaged  # Left as it was, for the user to look at.


def test_load_model_still_loads_what_dlref_saved(trained):
    model = saved.load_model(trained["binary"]["run"] / "model.keras")
    assert model.count_params() > 0


# --- Symbolic links in the runs root ------------------------------------------------------------


def test_a_run_folder_linked_from_outside_the_root_is_refused(trained, runs_root, tmp_path):
    outside = tmp_path / "elsewhere" / trained["regression"]["run"].name
    shutil.copytree(trained["regression"]["run"], outside)
    link = runs_root / "regression" / outside.name
    link.parent.mkdir(parents=True)
    link.symlink_to(outside, target_is_directory=True)
    for ref in (link, outside.name, "fixture-regression"):
        for args in (["evaluate", ref], ["train", "--resume", ref], ["tune", "--resume", ref]):
            helpers.assert_user_error(helpers.invoke(*args), str(link), "symbolic link",
                                      "inside the runs root")


def test_a_recipe_folder_linked_outside_the_root_is_refused(trained, runs_root, tmp_path):
    outside = tmp_path / "elsewhere"
    shutil.copytree(trained["regression"]["run"], outside / trained["regression"]["run"].name)
    runs_root.mkdir()
    (runs_root / "regression").symlink_to(outside, target_is_directory=True)
    result = helpers.invoke("evaluate", "fixture-regression")
    helpers.assert_user_error(result, "symbolic link", str(outside))


@pytest.mark.parametrize("member", ["model.keras", "artifacts/meta.json", "run.json"])
def test_a_linked_file_in_a_run_is_refused(member, run_copy, tmp_path):
    target = tmp_path / Path(member).name
    shutil.move(run_copy / member, target)
    (run_copy / member).symlink_to(target)
    new_rows = helpers.regression_csv(tmp_path / "new.csv", categorical=True)
    for args in (["evaluate", run_copy], ["predict", run_copy, "--data", new_rows]):
        helpers.assert_user_error(helpers.invoke(*args), str(run_copy / member), "symbolic link")
    assert target.exists()


def test_a_linked_last_checkpoint_is_refused_on_resume(run_copy, tmp_path):
    manifest = helpers.read_json(run_copy / "run.json")
    manifest["status"] = "interrupted"
    (run_copy / "run.json").write_text(json.dumps(manifest))
    last = run_copy / "checkpoints" / "last.keras"
    _lambda_model(tmp_path / "planted.keras")
    last.unlink()
    last.symlink_to(tmp_path / "planted.keras")
    result = helpers.invoke("train", "--resume", run_copy)
    helpers.assert_user_error(result, str(last), "symbolic link")
    assert helpers.read_json(run_copy / "run.json")["status"] == "interrupted"


def test_load_model_refuses_a_link(run_copy, tmp_path):
    link = tmp_path / "linked.keras"
    link.symlink_to(run_copy / "model.keras")
    with pytest.raises(DlrefError, match="symbolic link"):
        saved.load_model(link)


def test_a_runs_root_that_is_itself_a_link_still_works(trained, tmp_path):
    link = tmp_path / "runs-link"
    link.symlink_to(trained["regression"]["root"], target_is_directory=True)
    helpers.assert_ok(helpers.invoke("evaluate", "fixture-regression", "--runs-dir", link))


# --- The minimum versions pyproject.toml declares -----------------------------------------------


def _declared():
    project = tomllib.loads((helpers.REPO / "pyproject.toml").read_text())["project"]
    extras = [r for group in project.get("optional-dependencies", {}).values() for r in group]
    return [Requirement(r) for r in project["dependencies"]], [Requirement(r) for r in extras]


def test_installed_packages_meet_the_declared_minimums():
    required, extras = _declared()
    assert "tensorboard" in {r.name for r in required}  # keras-tuner fails every trial without.
    assert all(r.specifier for r in required), "every dependency names a minimum"
    for requirement in required + extras:
        if requirement.marker and not requirement.marker.evaluate():
            continue
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            assert requirement in extras, f"{requirement.name} is required but not installed"
            continue
        assert requirement.specifier.contains(installed, prereleases=True), (
            f"{requirement.name} {installed} does not satisfy {requirement}")
