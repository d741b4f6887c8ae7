"""Benchmark of `dlref tune` for `make bench` (scripts/bench.py calls dlref.tuning.benchmark).

One small Hyperband search (regression, a generated table, max_epochs 9: 23 trials, 75
epochs) run twice in fresh processes: by one process, then by a chief and two workers on
127.0.0.1. Trials per minute count the search time in run.json (from the first trial request to
the last result), not the processes' start-up. RSS after trial 1 and trial 20 comes from the
single process, which records it after every trial.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def benchmark(rows=200, max_epochs=9, workers=2):
    """Returns {figure: value}: trials per minute (1 process; chief + workers) and RSS in MiB."""
    with tempfile.TemporaryDirectory(prefix="dlref-bench-tune-") as folder:
        folder = Path(folder)
        data = _table(folder / "table.csv", rows)
        args = ["tune", "regression", "--data", str(data), "--target", "y",
                "--max-epochs", str(max_epochs)]
        single = _search(folder / "single", [args])
        oracle = f"127.0.0.1:{_free_port()}"
        cluster = _search(folder / "cluster", [[*args, "--role", "chief", "--oracle", oracle]] + [
            [*args, "--role", "worker", "--oracle", oracle, "--worker-id", f"w{index}"]
            for index in range(workers)])
    rss = single["memory"]["rss_mib_after_trial"]
    last = min(20, len(rss))
    return {
        f"Hyperband search (regression, {rows} rows, max_epochs {max_epochs})":
            f"{single['budget']['trials']} trials, {single['budget']['epochs']} epochs",
        "trials/min, 1 process": _per_minute(single),
        f"trials/min, chief + {workers} workers": _per_minute(cluster),
        "RSS after trial 1 (MiB)": rss[0],
        f"RSS after trial {last} (MiB)": rss[last - 1],
    }


def _table(path, rows, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 3))
    y = 3 * x[:, 0] - 2 * x[:, 1] + 0.5 * x[:, 2] + rng.normal(scale=0.1, size=rows)
    np.savetxt(path, np.column_stack([x, y]), delimiter=",", header="x1,x2,x3,y", comments="",
               fmt="%.5f")
    return path


def _search(runs_dir, commands):
    """Runs the commands together (one search); returns the search's run.json."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "DLREF_RUNS_DIR": str(runs_dir)}
    processes = [subprocess.Popen([sys.executable, "-m", "dlref.cli", *command], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for command in commands]
    for process in processes:
        _, errors = process.communicate(timeout=1800)
        if process.returncode:
            raise RuntimeError(f"dlref tune failed ({process.returncode}):\n{errors[-2000:]}")
    (manifest,) = Path(runs_dir).glob("regression/*/run.json")
    return json.loads(manifest.read_text())


def _per_minute(manifest):
    return round(manifest["trials"]["completed"] / (manifest["timings"]["seconds"] / 60), 1)


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
