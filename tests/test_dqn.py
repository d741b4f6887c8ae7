"""The DQN recipe (chapter 12): keras-rl2 in its worker process, driven by `dlref train dqn`.

The worker is a process boundary, so these tests run the CLI in a subprocess as a user would,
with tiny settings: a few hundred CartPole steps take about 10 s, most of it importing
TensorFlow twice.
"""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

import helpers
from dlref import registry
from dlref.rl import envs, runner

# Short tests: few episodes per test, a short final evaluation, no GIF unless asked.
QUICK = ["--set", "test_episodes=2", "--set", "eval_episodes=2", "--set", "record_episode=false"]


def _dlref(tmp_path, *args, timeout=300):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "dlref.cli", *map(str, args)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=timeout)


def _ok(process):
    assert process.returncode == 0, process.stdout[-3000:] + process.stderr[-3000:]
    assert "Traceback" not in process.stderr, process.stderr
    return process


def _rows(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _scalars(folder):
    """{tag: [(step, value)]} of the simple-value scalars in a TensorBoard log folder."""
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    found = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in LegacyEventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found


def test_a_few_hundred_cartpole_steps_write_a_complete_run(tmp_path, runs_root):
    process = _ok(_dlref(tmp_path, "train", "dqn", "--steps", 300, "--name", "pole",
                         "--set", "test_interval=150", *QUICK, "--set", "record_episode=true"))
    assert "Training a DQN on CartPole-v1" in process.stdout
    assert "Test at step" in process.stdout and "mean_reward" in process.stdout
    run_dir = helpers.only_run(runs_root, "dqn")
    manifest = helpers.read_json(run_dir / "run.json")
    assert manifest["status"] == "completed" and manifest["kind"] == "train"
    assert manifest["steps_completed"] == 300 and manifest["env"] == "CartPole-v1"
    assert manifest["versions"]["keras-rl2"] == "1.0.5"
    assert manifest["best"]["value"] > 0 and manifest["test"]["metric"] == "mean_reward"
    assert "steps = 300" in (run_dir / "config.toml").read_text()

    episodes = _rows(run_dir / "history.csv")
    assert int(episodes[-1]["step"]) <= 300 and float(episodes[0]["epsilon"]) > 0.9
    assert [int(row["step"]) >= 150 for row in _rows(run_dir / "tests.csv")] == [True, True]
    train = _scalars(run_dir / "logs" / "train")
    assert {"episode_reward", "episode_length", "loss", "mean_q", "epsilon"} <= set(train)
    assert len(train["episode_reward"]) == len(episodes)
    assert "test_reward" in _scalars(run_dir / "logs" / "test")
    assert list((run_dir / "logs" / "plots").glob("events.out.tfevents.*"))

    for name in ("checkpoints/best.h5", "checkpoints/last.h5", "model.h5"):
        assert (run_dir / name).stat().st_size > 0, name
    metrics = helpers.read_json(run_dir / "metrics.json")
    assert metrics["episodes"] == 2 and len(metrics["rewards"]) == 2
    assert set(metrics["metrics"]["mean_reward"]) == {"model", "random", "solved"}
    assert metrics["metrics"]["mean_reward"]["solved"] == 475
    assert (run_dir / "plots" / "reward_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert (run_dir / "plots" / "episode.gif").read_bytes()[:3] == b"GIF"

    listed = _ok(_dlref(tmp_path, "runs", "dqn"))
    assert "300 steps" in listed.stdout and "CartPole-v1" in listed.stdout

    # evaluate reloads model.h5 and plays; same episodes, same env seed: same rewards.
    evaluated = _ok(_dlref(tmp_path, "evaluate", "pole", "--episodes", 2, "--record",
                           "--json"))
    result = json.loads(evaluated.stdout)
    assert result["rewards"] == metrics["rewards"]
    assert result["metrics"]["mean_reward"]["random"] == metrics["metrics"]["mean_reward"][
        "random"]
    gif = result["recording"]["path"]
    assert gif.endswith(".gif") and open(gif, "rb").read(3) == b"GIF"
    assert result["recording"]["frames"] == result["recording"]["length"] + 1

    refused = _dlref(tmp_path, "predict", "pole", "--data", "x.csv")
    assert refused.returncode == 2 and "dlref evaluate" in refused.stderr


# keras-rl2's Agent.fit under dlref.rl.legacy, with an agent that needs no network and an
# environment of 100-step episodes: about 11 s here, most of it importing TensorFlow.
COUNTING = """
import numpy as np
import dlref.rl.legacy
import rl.core

class Env:
    action_space = None
    def reset(self):
        self.t = 0
        return np.zeros(1)
    def step(self, action):
        self.t += 1
        return np.zeros(1), 1.0, self.t == 100, {}

class Agent(rl.core.Agent):
    compiled = True
    def forward(self, observation):
        return 0
    def backward(self, reward, terminal):
        return []
    @property
    def metrics_names(self):
        return []

agent = Agent()
history = agent.fit(Env(), nb_steps=33_000, verbose=0)
print(int(agent.step), history.history["nb_steps"][-1], len(history.history["nb_steps"]))
"""


def test_the_step_counter_passes_32767():
    # Agent.fit counts steps in np.int16: unpatched, the count wraps to -32768 and the loop never
    # ends (the timeout). dlref.rl.legacy makes rl.core's int16 Python's int.
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    process = subprocess.run([sys.executable, "-c", COUNTING], env=env, capture_output=True,
                             text=True, timeout=120)
    assert process.returncode == 0, process.stderr[-3000:]
    assert process.stdout.split() == ["33000", "33000", "330"]


@pytest.mark.slow  # test_the_step_counter_passes_32767 checks the counter in seconds.
def test_a_run_longer_than_32767_steps_counts_them(tmp_path, runs_root):
    # keras-rl2's int16 step counter would wrap to -32768 here and the run would never end.
    # No learning (the warm-up outlasts the run) and a 4-unit network keep it quick.
    _ok(_dlref(tmp_path, "train", "dqn", "--steps", 33_000, "--set", "hidden_units=[4]",
               "--set", "warmup_steps=100000", "--set", "test_interval=100000",
               "--set", "epsilon_steps=30000", *QUICK, timeout=600))
    run_dir = helpers.only_run(runs_root, "dqn")
    assert helpers.read_json(run_dir / "run.json")["steps_completed"] == 33_000
    assert helpers.read_json(run_dir / "checkpoints" / "state.json")["step"] == 33_000
    episodes = _rows(run_dir / "history.csv")
    steps = [int(row["step"]) for row in episodes]
    assert steps == sorted(steps) and 32_767 < steps[-1] <= 33_000
    assert [int(row["episode"]) for row in episodes] == list(range(1, len(episodes) + 1))
    assert float(episodes[-1]["epsilon"]) == pytest.approx(0.1)  # Annealed, not run backwards.


def test_the_same_seed_gives_the_same_episodes(tmp_path, runs_root):
    for name in ("first", "second"):
        _ok(_dlref(tmp_path, "train", "dqn", "--steps", 500, "--seed", 7, "--name", name,
                   "--set", "test_interval=250", *QUICK))
    first, second = sorted(helpers.run_folders(runs_root, "dqn"),
                           key=lambda run: run.name.endswith("second"))
    rewards = [[row["reward"] for row in _rows(run / "history.csv")] for run in (first, second)]
    assert rewards[0] == rewards[1] and len(rewards[0]) > 5
    # Learning started at step 10, so equal episodes mean equal updates, not only equal luck.
    losses = [[row["loss"] for row in _rows(run / "history.csv")] for run in (first, second)]
    assert losses[0] == losses[1]
    tests = [_rows(run / "tests.csv") for run in (first, second)]
    assert tests[0] == tests[1]


def _stopped_after_first_test(tmp_path, signum, *args):
    """Starts `dlref train dqn ARGS`, sends `signum` once the first periodic test is printed
    (weights exist, training goes on); returns (exit code, stdout, stderr)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "-m", "dlref.cli", "train", "dqn",
                                *map(str, args), *QUICK], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("Test at step"):
            process.send_signal(signum)
            break
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def test_sigterm_stops_the_agent_and_saves(tmp_path, runs_root):
    code, out, err = _stopped_after_first_test(tmp_path, signal.SIGTERM, "--steps", 100_000,
                                               "--set", "test_interval=200")
    assert code == 130 and "Run interrupted (stopped by SIGTERM)" in err, out + err
    run_dir = helpers.only_run(runs_root, "dqn")
    assert helpers.read_json(run_dir / "run.json")["status"] == "interrupted"
    assert (run_dir / "checkpoints" / "last.h5").is_file()
    assert "Traceback" not in (run_dir / "worker.log").read_text()


def test_ctrl_c_leaves_an_interrupted_run_that_resumes(tmp_path, runs_root):
    code, out, err = _stopped_after_first_test(tmp_path, signal.SIGINT, "--steps", 1500,
                                               "--name", "stop", "--set", "test_interval=300")
    assert code == 130, out + err
    assert "Run interrupted (stopped by SIGINT)" in err and "dlref train --resume" in err
    run_dir = helpers.only_run(runs_root, "dqn")
    manifest = helpers.read_json(run_dir / "run.json")
    state = helpers.read_json(run_dir / "checkpoints" / "state.json")
    assert manifest["status"] == "interrupted" and 300 <= state["step"] < 1500
    assert manifest["steps_completed"] == state["step"]
    assert all(int(row["step"]) <= state["step"] for row in _rows(run_dir / "history.csv"))

    # A worker that cannot go on (here: damaged weights) fails the run with a clear message.
    broken = run_dir.parent / f"{run_dir.name}-copy"
    shutil.copytree(run_dir, broken)
    (broken / "checkpoints" / "last.h5").write_bytes(b"not HDF5")
    failed = _dlref(tmp_path, "train", "--resume", broken)
    assert failed.returncode == 2 and "Training failed: the keras-rl2 worker stopped" in \
        failed.stderr and "Traceback" not in failed.stderr
    assert helpers.read_json(broken / "run.json")["status"] == "failed"
    shutil.rmtree(broken)

    resumed = _ok(_dlref(tmp_path, "train", "--resume", "stop", "--steps", 1200))
    assert f"at step {state['step']:,} of 1,200" in resumed.stdout
    assert "The replay memory starts empty" in resumed.stdout
    manifest = helpers.read_json(run_dir / "run.json")
    assert manifest["status"] == "completed" and manifest["steps_completed"] == 1200
    steps = [int(row["step"]) for row in _rows(run_dir / "history.csv")]
    assert steps == sorted(steps) and steps[-1] <= 1200
    epsilons = [float(row["epsilon"]) for row in _rows(run_dir / "history.csv")]
    assert epsilons == sorted(epsilons, reverse=True)  # Annealing went on from the step reached.


def test_a_few_hundred_breakout_steps_run_end_to_end(tmp_path, runs_root):
    process = _ok(_dlref(tmp_path, "train", "dqn", "--env", "ALE/Breakout-v5", "--steps", 200,
                         "--set", "warmup_steps=50", "--set", "memory_limit=1000",
                         "--set", "test_interval=100", "--set", "max_episode_steps=150",
                         "--set", "test_episodes=1", "--set", "eval_episodes=1",
                         "--set", "dueling=true"))
    assert "preset dqn-breakout" in process.stdout
    assert "84x84 grayscale frames, a window of 4; 4 actions" in process.stdout
    run_dir = helpers.only_run(runs_root, "dqn")
    manifest = helpers.read_json(run_dir / "run.json")
    assert manifest["status"] == "completed" and manifest["preset"] == "dqn-breakout"
    assert manifest["config"]["window_length"] == 4 and manifest["config"]["train_interval"] == 4
    assert manifest["config"]["dueling"] is True  # The option builds and trains.
    assert manifest["steps_completed"] == 200
    assert (run_dir / "plots" / "episode.gif").read_bytes()[:3] == b"GIF"


# --- In the dlref process: refusals, settings, no TensorFlow -----------------------------------


@pytest.mark.parametrize("env_id, words", [
    ("LunarLanderContinuous-v3", ["continuous action space", "LunarLander-v3"]),
    ("Pendulum-v1", ["continuous action space", "Acrobot-v1"]),
    ("CartPol-v1", ["Unknown gymnasium env", "CartPole-v1"]),
])
def test_envs_a_dqn_cannot_learn_are_refused_before_a_run_exists(env_id, words, runs_root):
    result = helpers.invoke("train", "dqn", "--env", env_id)
    helpers.assert_user_error(result, *words)
    assert not runs_root.exists() or not list(runs_root.glob("dqn/*"))


@pytest.mark.parametrize("args, words", [
    (["--epochs", "3"], ["steps, not epochs", "--steps"]),
    (["--data", "x.csv"], ["not from a file", "--env"]),
    (["--set", "epsilon_min=2"], ["epsilon_min is a probability"]),
    (["--set", "hidden_units=[]"], ["hidden_units"]),
    (["--set", "memory_limit=8"], ["memory_limit"]),
    (["--set", "memory_limit=100000000000"], ["GiB when full", "--set memory_limit="]),
])
def test_bad_dqn_options_are_refused(args, words):
    helpers.assert_user_error(helpers.invoke("train", "dqn", *args), *words)


def test_other_recipes_refuse_dqn_options(regression_csv):
    result = helpers.invoke("train", "regression", "--data", regression_csv, "--target", "y",
                            "--env", "CartPole-v1")
    helpers.assert_user_error(result, "--env goes with the dqn recipe")


def test_the_book_settings_follow_the_env():
    presets = registry.presets()
    assert runner._book_preset("dqn", None, "LunarLander-v3", {"observation": "flat"}) == \
        "dqn-lunarlander"
    assert runner._book_preset("dqn", None, "ALE/Pong-v5", {"observation": "image"}) == \
        "dqn-breakout"
    assert runner._book_preset("dqn", None, "CartPole-v1", {"observation": "flat"}) is None
    assert runner._book_preset("dqn", None, "Acrobot-v1", {"observation": "flat"}) is None
    assert runner._book_preset("dqn-cartpole", None, "LunarLander-v3", {}) is None
    assert presets["dqn-lunarlander"]["config"]["hidden_units"] == [64, 32, 16]
    assert presets["dqn-breakout"]["config"]["window_length"] == 4
    for name in ("dqn-cartpole", "dqn-lunarlander", "dqn-breakout"):
        info = envs.describe(presets[name]["config"]["env"])
        assert info["actions"] >= 2 and info["observation"] in ("flat", "image")


def test_discrete_states_are_one_hot():
    import numpy as np

    from dlref.recipes import dqn

    info = envs.describe("FrozenLake-v1")
    assert info["observation"] == "discrete" and info["observation_shape"] == [16]
    processor = dqn.processor(info)
    assert processor.process_observation(3).tolist() == [0] * 3 + [1] + [0] * 12
    frame = dqn.processor({"observation": "image"}).process_observation(
        np.zeros((210, 160, 3), dtype="uint8"))
    assert frame.shape == (84, 84) and frame.dtype == "uint8"


@pytest.mark.slow
def test_cartpole_reaches_195_with_the_book_settings(tmp_path, runs_root):
    """Issue 10: the book's CartPole agent trains until the mean of 20 test episodes is at
    least 195 (CartPole-v0's threshold). Prints steps, minutes and steps/s (pytest -s)."""
    import time

    started = time.perf_counter()
    _ok(_dlref(tmp_path, "train", "dqn", "--seed", 0, "--set", "test_interval=2500",
               "--set", "test_episodes=20", "--set", "stop_at_reward=195",
               "--set", "record_episode=false", timeout=1800))
    minutes = (time.perf_counter() - started) / 60
    run_dir = helpers.only_run(runs_root, "dqn")
    manifest = helpers.read_json(run_dir / "run.json")
    last = _rows(run_dir / "tests.csv")[-1]
    assert float(last["mean"]) >= 195 and int(last["episodes"]) == 20
    assert manifest["steps_completed"] == int(last["step"]) < 50_000  # It stopped there.
    print(f"\nCartPole-v1, the book's settings: a mean of {float(last['mean']):.1f} over 20 test "
          f"episodes at step {int(last['step']):,}, {minutes:.1f} min, "
          f"{manifest['timings']['steps_per_second']:,.0f} steps/s")
