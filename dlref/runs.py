"""Run directories: safe names, atomic creation, the run.json manifest, listing.

Layout (DESIGN.md section 4): runs/<recipe>/<YYYYmmdd-HHMMSS>-<4 hex>[-<name>]/ holding
run.json, config.toml, logs/, checkpoints/, model.keras, artifacts/, history.csv,
metrics.json and plots/. This module imports nothing heavy: `dlref runs` must stay fast.
"""

import contextlib
import os
import re
import secrets
import socket
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from dlref import io
from dlref.errors import DlrefError

MANIFEST = "run.json"
LOCK = ".lock"
NAME_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
STATUSES = ("running", "completed", "failed", "interrupted")


def validate_name(name):
    """Rejects run names that could escape the runs root or clash with path syntax."""
    if not NAME_PATTERN.fullmatch(name) or set(name) == {"."} or ".." in name:
        raise DlrefError(
            f"Invalid run name {name!r}: use 1-64 characters from A-Z a-z 0-9 . _ - "
            "(no '/', no '..')."
        )
    return name


def runs_root(runs_dir=None):
    """--runs-dir, else $DLREF_RUNS_DIR, else ./runs; refused when it names a file."""
    path = Path(runs_dir or os.environ.get("DLREF_RUNS_DIR") or "runs")
    if path.exists() and not path.is_dir():
        named = f"--runs-dir {path}" if runs_dir else f"DLREF_RUNS_DIR ({path})"
        if not runs_dir and not os.environ.get("DLREF_RUNS_DIR"):
            named = f"The default runs folder {path}"
        raise DlrefError(f"{named} is a file, not a folder. Give a folder for the runs with "
                         "--runs-dir (or DLREF_RUNS_DIR).")
    return path


def create_run(root, recipe, name=None, prefix=""):
    """Creates a fresh run folder; two runs never share one (mkdir with exist_ok=False)."""
    if name is not None:
        validate_name(name)
    recipe_dir = Path(root) / recipe
    try:
        recipe_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(20):
            stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
            folder = f"{prefix}{stamp}-{secrets.token_hex(2)}" + (f"-{name}" if name else "")
            try:
                (recipe_dir / folder).mkdir(exist_ok=False)
                return recipe_dir / folder
            except FileExistsError:
                continue
    except (FileExistsError, NotADirectoryError):  # The folder, or one above it, is a file.
        file = next((p for p in (recipe_dir, *recipe_dir.parents) if p.exists()), recipe_dir)
        raise DlrefError(f"Cannot create a run folder in {recipe_dir}: {file} is a file, not a "
                         "folder. Choose another --runs-dir (or DLREF_RUNS_DIR).") from None
    except OSError as error:  # Read-only, no space left, ...
        raise DlrefError(f"Cannot create a run folder in {recipe_dir}: {error.strerror}. Choose "
                         "a folder you can write to with --runs-dir (or DLREF_RUNS_DIR).") from None
    raise DlrefError(f"Could not create a unique run folder under {recipe_dir}.")


def read_manifest(run_dir):
    path = Path(run_dir) / MANIFEST
    try:
        return io.read_json(path)
    except ValueError as error:  # Damaged by hand, or by a full disk before dlref wrote it.
        raise DlrefError(f"{path} is not readable JSON ({error}): dlref cannot tell what this "
                         "run is. Restore the file, or start a new run.") from None


@contextlib.contextmanager
def locked(run_dir):
    """Holds the run folder's lock while this process writes into it.

    The lock is an flock on RUN/.lock, which holds the owner's pid and host for the message a
    second process gets. The kernel releases an flock when its process dies, kill -9 included,
    so a lock left by a dead process never blocks a resume. The file itself stays (deleting it
    would let two processes lock two different files of the same name).
    """
    import fcntl

    path = Path(run_dir) / LOCK
    try:
        handle = open(path, "a+", encoding="utf-8")
    except OSError as error:
        raise DlrefError(f"Cannot write in {run_dir} ({error.strerror}).") from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            owner = handle.read().strip() or "another process"
            raise DlrefError(f"{run_dir} is in use by {owner}: wait for it to finish or stop "
                             "it first (two processes writing one run would mix their "
                             "epochs).") from None
        except OSError as error:  # ENOLCK: a network file system without locking.
            print(f"Warning: cannot lock {run_dir} ({error.strerror}); make sure no other dlref "
                  "process writes to this run.", file=sys.stderr, flush=True)
            yield
            return
        handle.truncate(0)
        handle.write(f"dlref process {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_writable(run_dir):
    """Fails before training, not after it, when a folder of the run cannot be written."""
    for folder in (run_dir, run_dir / "checkpoints", run_dir / "checkpoints" / "backup",
                   run_dir / "logs", run_dir / "plots", run_dir / "artifacts"):
        if not folder.is_dir():
            continue
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as error:
            raise DlrefError(f"Cannot write in {folder} ({error.strerror}): fix its "
                             "permissions, then resume again.") from None


def write_manifest(run_dir, manifest):
    manifest["updated"] = _now()
    io.write_json(Path(run_dir) / MANIFEST, manifest)
    return manifest


def update_manifest(run_dir, **changes):
    manifest = read_manifest(run_dir)
    manifest.update(changes)
    return write_manifest(run_dir, manifest)


def new_manifest(run_dir, kind, recipe, argv, **fields):
    manifest = {
        "kind": kind,
        "recipe": recipe,
        "run": Path(run_dir).name,
        "status": "running",
        "created": _now(),
        "argv": list(argv),
        "pid": os.getpid(),
        "host": socket.gethostname(),
        **fields,
    }
    return write_manifest(run_dir, manifest)


def mark_running(run_dir, **changes):
    """Claims a run for this process again (resume), with any other manifest changes."""
    return update_manifest(run_dir, status="running", pid=os.getpid(), host=socket.gethostname(),
                           **changes)


def find_run(ref, root):
    """Resolves RUN: a path to a run folder, a folder name under the runs root, or the name
    given with --name (the newest run of that name, when there are several).

    A run reached through a symbolic link, or holding one, is refused: run folders live inside
    the runs root (DESIGN.md section 4) and dlref writes no links into them, so a link there
    was planted, and following it would load a model or a config from elsewhere.
    """
    path = Path(ref)
    if (path / MANIFEST).is_file():
        return _without_links(path, root)
    # A name may also be a folder here: the data a run of that name was trained on
    # (`--data faces --name faces`). A run of that name comes first.
    if "/" not in str(ref) and NAME_PATTERN.fullmatch(str(ref)):
        matches = sorted(p.parent for p in Path(root).glob(f"*/{ref}/{MANIFEST}"))
        if len(matches) > 1:
            listed = ", ".join(str(m) for m in matches)
            raise DlrefError(f"Run name {ref!r} is ambiguous: {listed}. Give the path.")
        named = Path(root).glob(f"*/*-{ref}/{MANIFEST}")
        matches = matches or sorted((p.parent for p in named), key=_started)[-1:]
        if matches:
            return _without_links(matches[0], root)
    if path.is_dir():
        raise DlrefError(f"{ref} is a folder but not a dlref run (it has no {MANIFEST}), and "
                         f"no run under {root}/ has that name.")
    raise DlrefError(f"No run {ref!r} (looked for a folder with {MANIFEST}, and under {root}/).")


def _without_links(run_dir, root):
    """The run folder, unless it is a symbolic link, leads out of the runs root through one,
    or holds one (find_run)."""
    if run_dir.is_symlink():
        raise DlrefError(f"{run_dir} is a symbolic link (to {os.readlink(run_dir)}), which dlref "
                         f"does not follow: run folders live inside the runs root ({root}). "
                         "Copy the run there instead of linking it.")
    inside = Path(os.path.abspath(run_dir)).is_relative_to(os.path.abspath(root))
    if inside and not run_dir.resolve().is_relative_to(Path(root).resolve()):
        raise DlrefError(f"{run_dir} leads out of the runs root ({root}) through a symbolic link: "
                         f"it is {run_dir.resolve()}. Run folders live inside the runs root: "
                         "copy the run there instead of linking it.")
    for folder, subfolders, files in os.walk(run_dir):
        for link in (Path(folder, name) for name in subfolders + files):
            if link.is_symlink():
                raise DlrefError(f"{link} is a symbolic link (to {os.readlink(link)}), which "
                                 "dlref does not follow: it writes no links into run folders. "
                                 "Put the file itself there (cp --dereference) or train again.")
    return run_dir


def _started(run_dir):
    """Sort key: a run folder's creation stamp (tune- runs sort among the others), then the
    folder's own time for runs started within the same second."""
    return run_dir.name.removeprefix("tune-")[:15], run_dir.stat().st_ctime_ns


def list_runs(root, recipe=None):
    """Manifests of every run under the root, oldest first; a killed process shows as 'killed'."""
    pattern = f"{recipe}/*/{MANIFEST}" if recipe else f"*/*/{MANIFEST}"
    manifests = []
    for path in Path(root).glob(pattern):
        try:
            manifest = io.read_json(path)
        except (OSError, ValueError):
            continue
        manifest["path"] = str(path.parent)
        if manifest.get("status") == "running" and not is_alive(manifest):
            manifest["status"] = "killed"
        manifests.append(manifest)
    return sorted(manifests, key=lambda m: m.get("created", ""))


def is_alive(manifest):
    """Whether the process that wrote a 'running' manifest still runs (assumed so elsewhere)."""
    if manifest.get("host") != socket.gethostname():
        return True  # Another machine's process: we cannot tell, so trust the manifest.
    try:
        pid = int(manifest.get("pid", 0))
        if pid <= 0 or pid == os.getpid():
            return False  # No pid recorded, or our own process: not another live run.
        os.kill(pid, 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def _now():
    return datetime.now().astimezone().isoformat(timespec="seconds")

