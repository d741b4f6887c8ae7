"""Atomic writes: a temp file in the same folder, fsync, then os.replace.

A kill at any moment leaves either the old file or the new one, never a truncated one.
"""

import contextlib
import json
import os
import re
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yields a temporary path beside `path`; on success it replaces `path` atomically.

    Args:
        path: the final file.
        suffix: kept on the temporary name, for writers that check it (Keras wants `.keras`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# Names atomic_path gives its temporary files: .NAME.<8 random characters>.tmp[SUFFIX].
TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp(\.[A-Za-z0-9.]+)?")


def remove_temporaries(folder):
    """Deletes temporary files that a killed process left under `folder` (mid-save, before its
    rename); call it only while no other process writes there (the run's lock held)."""
    for path in Path(folder).rglob(".*.tmp*"):
        if path.is_file() and not path.is_symlink() and TEMPORARY.fullmatch(path.name):
            path.unlink()


def write_text(path, text):
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")


def write_bytes(path, data):
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def read_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"))


def save_model(model, path):
    """Saves a Keras model atomically (Keras itself writes in place)."""
    with atomic_path(path, suffix=".keras") as tmp:
        model.save(tmp)


def _json_default(value):
    # numpy scalars and arrays reach the manifest through metrics; plain JSON has no such types.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
