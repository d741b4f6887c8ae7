"""The DQN recipe's side in the dlref process: run folder, worker process, progress, signals.

`dlref train dqn` checks the env and the config, creates the run folder, then starts the
keras-rl2 worker (`python -m dlref.rl.worker`) and reads its events: each episode goes to
history.csv and TensorBoard, each periodic test to tests.csv, TensorBoard and the terminal.
Ctrl-C or SIGTERM is passed on to the worker, which stops at its next step and saves; a second
one stops it at once. A worker that dies leaves the run marked failed, with the end of its
output (RUN/worker.log) in the error. Nothing here imports TensorFlow.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime

from dlref import config as configlib
from dlref import io, registry, runs
from dlref.errors import DlrefError
from dlref.recipes import dqn
from dlref.rl import envs, read_state, report
from dlref.text import plural

HISTORY_COLUMNS = ("episode", "step", "reward", "length", "loss", "mean_q", "epsilon", "seconds")
TEST_COLUMNS = ("step", "mean", "std", "episodes")
LOG = "worker.log"


# --- train and resume ------------------------------------------------------------------------


def train(name, *, source, config_file=None, overrides=(), epochs=None, seed=None,
          run_name=None, runs_dir=None, argv=(), shortcuts=None, strategy="default"):
    """Trains the DQN recipe (or one of its presets) into a new run folder."""
    from dlref import backend
    from dlref.training import resolve_config

    if backend.REQUESTED:
        raise DlrefError("--backend does not apply to dqn: keras-rl2 runs on legacy Keras, "
                         "which is TensorFlow's.")
    root = runs.runs_root(runs_dir)
    if source.to_dict():
        raise DlrefError("dqn learns by acting in a gymnasium env, not from a file: give "
                         "--env ID (e.g. --env LunarLander-v3) instead of data options.")
    if epochs is not None:
        raise DlrefError("dqn counts environment steps, not epochs: use --steps N.")
    if strategy != "default":
        raise DlrefError("--strategy goes with the Keras recipes; keras-rl2 trains one agent "
                         "in one process.")
    recipe, preset, values = resolve_config(name, config_file, overrides, None, seed, shortcuts)
    info = envs.describe(values["env"])
    book = _book_preset(name, config_file, values["env"], info)
    if book:
        recipe, preset, values = resolve_config(book, config_file, overrides, None, seed,
                                                shortcuts)
        print(f"The book's settings for {values['env']}: preset {book} (dlref show {book}).",
              flush=True)
    config = dqn.Config(**values)
    dqn.check_config(config)
    _check_memory(config, info)
    if run_name is not None:
        runs.validate_name(run_name)
    run_dir = runs.create_run(root, recipe, run_name)
    with runs.locked(run_dir):
        runs.new_manifest(
            run_dir, "train", recipe, argv, preset=preset, config=values, source={},
            env=config.env, env_info=info, seed=config.seed, versions=_versions(),
            data={"source": f"{config.env} (gymnasium)", "fingerprint": None},
            monitor=dqn.MONITOR, mode=dqn.MODE, steps_completed=0, episodes_completed=0,
        )
        io.write_text(run_dir / "config.toml", configlib.to_toml(recipe, values))
        return _drive(run_dir, config, info)


def _check_memory(config, info):
    """Refuses a replay memory that would fill more than half of this machine's memory when
    full, hours into a run (the book's Breakout keeps 1,000,000 frames: about 7 GiB)."""
    if info["observation"] == "image":
        per_step = 84 * 84
    else:
        per_step = 4 * info["observation_shape"][0]
    per_step += 250  # keras-rl2 keeps each step as Python objects: an array, a reward, ...
    try:
        budget = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # Not on Linux or macOS: no check.
        return
    if config.memory_limit * per_step > budget:
        fits = budget // per_step
        raise DlrefError(
            f"A replay memory of {config.memory_limit:,} steps of {config.env} would take "
            f"{config.memory_limit * per_step / 2**30:.1f} GiB when full, more than half of this "
            f"machine's {2 * budget / 2**30:.0f} GiB. Use --set memory_limit={fits} or less.")


def _book_preset(name, config_file, env_id, info):
    """The preset with the book's settings for `env_id`, when plain `dqn` was asked for with
    another env than CartPole: the preset of that env, else dqn-breakout for any image env."""
    if name != "dqn" or config_file or env_id == dqn.Config.env:
        return None
    found = {document["config"].get("env"): preset
             for preset, document in registry.presets().items() if document["recipe"] == "dqn"}
    if env_id in found:
        return found[env_id]
    return "dqn-breakout" if info["observation"] == "image" else None


def _versions():
    from importlib import metadata

    from dlref.training import versions

    found = versions()
    for package in ("tf-keras", "keras-rl2", "gymnasium", "ale-py"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def resume(run_dir, manifest, steps=None):
    """Continues an interrupted DQN run from its last weights and step count (the caller holds
    the run's lock)."""
    values = configlib.merge(configlib.field_defaults(dqn.Config),
                             [("run.json", manifest["config"])])
    state = read_state(run_dir)
    if steps is not None:
        if state["fit_done"]:
            raise DlrefError(f"Training of {run_dir.name} is over ({state['step']:,} steps); "
                             "--resume only finishes its evaluation, so --steps cannot apply.")
        if steps < state["step"]:
            raise DlrefError(f"{run_dir.name} has trained {state['step']:,} steps, more than "
                             f"--steps {steps:,}. --steps is the new total.")
        values["steps"] = steps
    config = dqn.Config(**values)
    runs.check_writable(run_dir)
    io.remove_temporaries(run_dir)
    io.remove_temporaries(run_dir / "checkpoints")
    runs.mark_running(run_dir, config=values)
    where = ("training is over; evaluating" if state["fit_done"] else
             f"at step {state['step']:,} of {config.steps:,}")
    print(f"Resuming {run_dir} {where}.", flush=True)
    return _drive(run_dir, config, manifest["env_info"])


# --- The worker ------------------------------------------------------------------------------


def _drive(run_dir, config, info):
    """Runs the worker's training to its end and keeps run.json's status true."""
    state = read_state(run_dir)
    episodes = _keep_rows(run_dir / "history.csv", HISTORY_COLUMNS, state["step"])
    tests = _keep_rows(run_dir / "tests.csv", TEST_COLUMNS, state["step"])
    board = report.Board(run_dir / "logs")
    progress = Progress(config, episodes)
    found = {}

    def on_event(event):
        kind = event.pop("event")
        if kind == "start":
            progress.start(event, info)
        elif kind == "episode":
            row = {key: event[key] for key in HISTORY_COLUMNS}
            episodes.append(row)
            _append_row(run_dir / "history.csv", HISTORY_COLUMNS, row)
            board.scalars("train", row["step"], {
                "episode_reward": row["reward"], "episode_length": row["length"],
                "loss": row["loss"], "mean_q": row["mean_q"], "epsilon": row["epsilon"]})
            progress.episode(row)
        elif kind == "test":
            _tested(run_dir, event, tests, board, progress)
        elif kind == "trained" and event["solved"]:
            progress.close()
            print(f"Stopped at step {event['step']:,}: the test's mean reward reached "
                  f"stop_at_reward ({config.stop_at_reward:g}).", flush=True)
        found[kind] = event

    try:
        code, requests = _run_worker(["train", str(run_dir)], run_dir, on_event)
    finally:
        progress.close()
        board.close()
    trained = sum(row["seconds"] for row in episodes)  # In episodes: tests left out.
    steps = read_state(run_dir)["step"]
    runs.update_manifest(run_dir, steps_completed=steps, episodes_completed=len(episodes),
                         timings={"episode_seconds": round(trained, 1),
                                  "steps_per_second": round(steps / trained, 1) if trained
                                  else None})
    if "evaluation" in found:
        _finish(run_dir, config, info, found["evaluation"], episodes, tests, board)
        return run_dir
    if "stopped" in found or (requests.requested and code != 0):
        return _interrupted(run_dir, f"stopped by {requests.requested or 'a signal'}")
    raise _failed(run_dir, code)


def _run_worker(arguments, run_dir, on_event):
    """Starts `python -m dlref.rl.worker ARGUMENTS`, passes each event line to `on_event`, and
    returns (exit code, the StopRequests that saw the signals)."""
    from dlref.interrupts import StopRequests
    from dlref.processes import death_signal

    child = None

    def forward():  # The first Ctrl-C: the worker stops at its next step and saves.
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT)

    def stop_now():  # The second: no waiting for the step.
        if child is not None and child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        if runs.read_manifest(run_dir).get("status") == "running":
            _interrupted(run_dir, f"stopped by a second {requests.second}")
        sys.stdout.flush()
        os._exit(130)

    environment = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "PYTHONUNBUFFERED": "1",
                   "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3"),
                   "SDL_VIDEODRIVER": "dummy"}
    command = [sys.executable, "-m", "dlref.rl.worker", *arguments]
    with StopRequests(on_first=forward, on_second=stop_now) as requests, \
            open(run_dir / LOG, "ab") as log:
        requests.phase = "agent"
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, env=environment,
                                 start_new_session=True, preexec_fn=death_signal())
        if requests.requested:  # A signal while the worker was being started.
            forward()
        for line in child.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            on_event(event)
        return child.wait(), requests


def _failed(run_dir, code):
    """The error for a worker that ended without finishing, the run marked failed."""
    tail = [line for line in _tail(run_dir / LOG) if line.strip()]
    last = tail[-1].strip() if tail else f"exit code {code}"
    reason = f"the keras-rl2 worker stopped (exit code {code}): {last}"
    runs.update_manifest(run_dir, status="failed", error=reason)
    return DlrefError(f"Training failed: {reason}\nThe run {run_dir} is marked failed; the "
                      f"worker's output is in {run_dir / LOG}.")


def _tail(path, lines=30):
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def _interrupted(run_dir, reason):
    state = read_state(run_dir)
    runs.update_manifest(run_dir, status="interrupted", error=reason,
                         steps_completed=state["step"])
    if state["fit_done"]:
        saved = "Training is over; the resume runs the evaluation."
    elif state["step"]:
        saved = (f"Saved the weights of step {state['step']:,} in {run_dir / 'checkpoints'}; "
                 "the resume continues from there (with an empty replay memory).")
    else:
        saved = "No step was saved yet; the resume starts at step 0."
    print(f"\nRun interrupted ({reason}). {saved}\nResume with:  dlref train --resume "
          f"{run_dir}", file=sys.stderr, flush=True)
    return run_dir


# --- Events ----------------------------------------------------------------------------------


def _tested(run_dir, event, tests, board, progress):
    row = {"step": event["step"], "mean": event["mean"], "std": event["std"],
           "episodes": len(event["rewards"])}
    tests.append(row)
    _append_row(run_dir / "tests.csv", TEST_COLUMNS, row)
    board.scalars("test", row["step"], {"test_reward": row["mean"],
                                        "test_reward_std": row["std"]})
    changes = {"steps_completed": row["step"]}
    if event["best"]:
        changes["best"] = {"step": row["step"], "value": row["mean"]}
    runs.update_manifest(run_dir, **changes)
    progress.test(row, event["best"])


def _keep_rows(path, columns, last_step):
    """The rows of a CSV written during training up to `last_step` (where the saved weights
    are from); later rows are dropped from the file too, since a resume trains them again."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        rows = [{key: _number(value) for key, value in row.items()}
                for row in csv.DictReader(handle)]
    kept = [row for row in rows if row["step"] <= last_step]
    if len(kept) != len(rows):
        with io.atomic_path(path, suffix=".csv") as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(kept)
    return kept


def _number(text):
    if text in ("", None):
        return None
    value = float(text)
    return int(value) if value.is_integer() and "." not in text else value


def _append_row(path, columns, row):
    new = not path.is_file()
    with open(path, "a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, columns)
        if new:
            writer.writeheader()
        writer.writerow(row)


class Progress:
    """The terminal's view of training: a line that updates in place on a terminal (every 15 s
    as a new line elsewhere) with the step toward --steps, the episode, its reward and the mean
    of the last 20, epsilon and steps per second; and one line per periodic test."""

    def __init__(self, config, episodes):
        self.config, self.recent = config, [row["reward"] for row in episodes[-20:]]
        self.tty = sys.stdout.isatty()
        self.shown = self.first_step = self.started = None
        self.open_line = False

    def start(self, event, info):
        if event["resumed"]:
            print(f"The replay memory starts empty: the first {event['warmup']:,} steps fill "
                  "it again before learning resumes.", flush=True)
        else:
            config = self.config
            kind = {"image": f"84x84 grayscale frames, a window of {config.window_length}",
                    "discrete": "one-hot states"}.get(info["observation"], "vector observations")
            solved = f"; solved at {info['solved']:g}" if info["solved"] is not None else ""
            tests = plural(config.test_episodes, "episode")
            print(f"Training a DQN on {config.env} ({kind}; {info['actions']} actions{solved}): "
                  f"{plural(event['parameters'], 'parameter')}, {config.steps:,} steps, a test "
                  f"of {tests} every {config.test_interval:,} steps.", flush=True)

    def episode(self, row):
        self.recent = (self.recent + [row["reward"]])[-20:]
        now = time.monotonic()
        if self.started is None:  # Steps/s from the end of the first episode: it builds graphs.
            self.first_step, self.started = row["step"], now
            return
        wait = 0.5 if self.tty else 15
        if self.shown is None or now - self.shown >= wait:
            self.shown = now
            self._line(row, now)

    def _line(self, row, now):
        done = row["step"] / self.config.steps
        speed = ""
        if now - self.started >= 2:  # Before that, a rate says little.
            rate = (row["step"] - self.first_step) / (now - self.started)
            left = (self.config.steps - row["step"]) / rate if rate > 0 else 0
            speed = f"  {rate:,.0f} steps/s  ETA {_clock(left)}"
        bar = "#" * int(20 * done) + "-" * (20 - int(20 * done))
        text = (f"step {row['step']:>9,}/{self.config.steps:,} [{bar}] {done:4.0%}  episode "
                f"{row['episode']:,}  reward {row['reward']:.1f} (last 20: "
                f"{sum(self.recent) / len(self.recent):.1f})  epsilon {row['epsilon']:.2f}"
                f"{speed}")
        if self.tty:
            print(f"\r{text}\033[K", end="", flush=True)
            self.open_line = True
        else:
            print(text, flush=True)

    def test(self, row, best):
        self.close()
        note = "  best so far: weights saved" if best else ""
        print(f"Test at step {row['step']:,}: mean reward {row['mean']:.1f} ± {row['std']:.1f} "
              f"over {plural(row['episodes'], 'episode')}{note}", flush=True)

    def close(self):
        if self.open_line:
            print(flush=True)
            self.open_line = False


def _clock(seconds):
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


# --- The end of a run ------------------------------------------------------------------------


def _finish(run_dir, config, info, evaluation, episodes, tests, board):
    """metrics.json, the reward curve, the summary; the run marked completed."""
    metrics = report.test_metrics(evaluation, info["solved"])
    best = runs.read_manifest(run_dir).get("best")
    io.write_json(run_dir / "metrics.json", {
        "split": "test", "episodes": len(evaluation["rewards"]), "weights": evaluation["weights"],
        "best_step": (best or {}).get("step"), "metrics": metrics,
        "rewards": evaluation["rewards"], "random_rewards": evaluation["random_rewards"]})
    figure = report.reward_curve(episodes, tests, config.env, info["solved"],
                                 metrics["mean_reward"]["random"], (best or {}).get("step"))
    curve = run_dir / "plots" / "reward_curve.png"
    report.save_figure(figure, curve)
    board.image("plots", episodes[-1]["step"] if episodes else 0, "reward_curve", curve)
    board.scalars("test", episodes[-1]["step"] if episodes else 0,
                  {"final/mean_reward": metrics["mean_reward"]["model"]})
    board.close()
    runs.update_manifest(run_dir, status="completed", error=None, metrics=metrics,
                         test={"metric": "mean_reward",
                               "value": metrics["mean_reward"]["model"]})
    _summary(run_dir, evaluation, metrics)


def recorded(evaluation):
    """The line about the recorded episode (or why there is none), or ''."""
    recording = evaluation.get("recording")
    if evaluation.get("recording_error"):
        return f"\nCould not record an episode: {evaluation['recording_error']}"
    if not recording:
        return ""
    cut = f", the first {recording['frames']:,} frames" if recording["cut"] else ""
    return f"\nRecorded an episode (reward {recording['reward']:.1f}{cut}): {recording['path']}"


def _summary(run_dir, evaluation, metrics):
    from dlref.reports import metrics_table

    weights = {"best": "the best tested weights", "last": "the last weights",
               "model": "the saved model"}[evaluation["weights"]]
    print(f"\nTest metrics over {plural(len(evaluation['rewards']), 'episode')} with {weights} "
          "(random = uniformly random actions; solved = the env's reward threshold):")
    print(metrics_table(metrics))
    if recorded(evaluation):
        print(recorded(evaluation))
    if run_dir is not None:
        root = run_dir.parent.parent
        print(f"\nRun:          {run_dir}\nTensorBoard:  dlref tensorboard {root}"
              f"   (or: tensorboard --logdir {root})")


# --- evaluate --------------------------------------------------------------------------------


def evaluate(run_dir, manifest, episodes=None, record=False):
    """Test episodes with a finished run's model.h5 (and, with `record`, a GIF of one); returns
    the result that `dlref evaluate` prints."""
    if not (run_dir / "model.h5").is_file():
        raise DlrefError(f"{run_dir} has no model.h5 (status: {manifest.get('status')}). "
                         f"Finish it first: dlref train --resume {run_dir}")
    if episodes is not None and episodes < 1:
        raise DlrefError(f"--episodes must be at least 1, got {episodes}.")
    arguments = ["evaluate", str(run_dir)]
    arguments += ["--episodes", str(episodes)] if episodes else []
    if record:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        arguments += ["--record", str(run_dir / "plots" / f"episode-{stamp}.gif")]
    found = {}
    code, requests = _run_worker(arguments, run_dir,
                                 lambda event: found.update({event.pop("event"): event}))
    if "evaluation" not in found:
        if requests.requested:
            raise DlrefError(f"Evaluation stopped by {requests.requested}.")
        tail = [line for line in _tail(run_dir / LOG) if line.strip()]
        raise DlrefError(f"The keras-rl2 worker stopped (exit code {code}): "
                         f"{tail[-1].strip() if tail else 'no output'}. See {run_dir / LOG}.")
    evaluation = found["evaluation"]
    saved = io.read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else {}
    measured = report.episode_metrics(evaluation["rewards"], evaluation["lengths"])
    metrics = {name: {"model": value} for name, value in measured.items()}
    for name, row in metrics.items():  # The random policy is not played again.
        row.update({k: v for k, v in saved.get("metrics", {}).get(name, {}).items()
                    if k != "model"})
    return {"metrics": metrics, "episodes": len(evaluation["rewards"]),
            "rewards": evaluation["rewards"], "lengths": evaluation["lengths"],
            "recording": evaluation.get("recording"), "weights": evaluation["weights"],
            **({"recording_error": evaluation["recording_error"]}
               if "recording_error" in evaluation else {})}

