"""Run directories: safe names, atomic creation, the run.json manifest, listing.

Layout (DESIGN.md section 4): runs/<recipe>/<YYYYmmdd-HHMMSS>-<4 hex>[-<name>]/ holding
run.json, config.toml, logs/, checkpoints/, model.keras, artifacts/, history.csv,
metrics.json and plots/. This module imports nothing heavy: `dlref runs` must stay fast.
"""

import os
import re
import secrets
import socket
from datetime import datetime
from pathlib import Path

from dlref import io
from dlref.errors import DlrefError

MANIFEST = "run.json"
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
    """--runs-dir, else $DLREF_RUNS_DIR, else ./runs."""
    return Path(runs_dir or os.environ.get("DLREF_RUNS_DIR") or "runs")


def create_run(root, recipe, name=None, prefix=""):
    """Creates a fresh run folder; two runs never share one (mkdir with exist_ok=False)."""
    if name is not None:
        validate_name(name)
    recipe_dir = Path(root) / recipe
    recipe_dir.mkdir(parents=True, exist_ok=True)
    for _ in range(20):
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        folder = f"{prefix}{stamp}-{secrets.token_hex(2)}" + (f"-{name}" if name else "")
        try:
            (recipe_dir / folder).mkdir(exist_ok=False)
            return recipe_dir / folder
        except FileExistsError:
            continue
    raise DlrefError(f"Could not create a unique run folder under {recipe_dir}.")


def read_manifest(run_dir):
    return io.read_json(Path(run_dir) / MANIFEST)


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
    given with --name (the newest run of that name, when there are several)."""
    path = Path(ref)
    if (path / MANIFEST).is_file():
        return path
    if path.is_dir():
        raise DlrefError(f"{ref} is a folder but not a dlref run (it has no {MANIFEST}).")
    if "/" not in str(ref) and NAME_PATTERN.fullmatch(str(ref)):
        matches = sorted(p.parent for p in Path(root).glob(f"*/{ref}/{MANIFEST}"))
        if len(matches) > 1:
            listed = ", ".join(str(m) for m in matches)
            raise DlrefError(f"Run name {ref!r} is ambiguous: {listed}. Give the path.")
        named = Path(root).glob(f"*/*-{ref}/{MANIFEST}")
        matches = matches or sorted((p.parent for p in named), key=_started)[-1:]
        if matches:
            return matches[0]
    raise DlrefError(f"No run {ref!r} (looked for a folder with {MANIFEST}, and under {root}/).")


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

