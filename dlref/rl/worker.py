"""The keras-rl2 worker process: `python -m dlref.rl.worker train|evaluate RUN_DIR [options]`.

dlref's runner starts it and reads its stdout, one JSON object per line (an "event"):
`start`, `episode` (each training episode), `test` (each periodic test), `trained` (the end
of training), `stopped` (a signal), `evaluation` and `finished`. Anything else the libraries
print goes to stderr, which the runner keeps in RUN/worker.log. The worker writes only the
weights and their state into the run folder (checkpoints/best.h5, last.h5, state.json;
model.h5; plots/episode.gif); the runner writes everything else (run.json, history.csv,
TensorBoard logs, metrics, plots).

SIGINT or SIGTERM stops training before the next step: the last weights and the step count are
saved and the worker exits with a `stopped` event. Nothing of dlref outside `dlref.rl`,
`dlref.recipes.dqn`, `dlref.io` and `dlref.config` is imported here: keras-rl2 turns eager
execution off for the whole process.
"""

from dlref.rl.stop import STOP  # First: a signal during the imports is kept.
from dlref.rl import legacy  # Before TensorFlow loads: it selects legacy Keras.

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from rl.callbacks import Callback

from dlref import config as configlib
from dlref import io
from dlref.recipes import dqn
from dlref.rl import envs, read_state

GIF_FRAMES = 1500  # At most this many frames in a recorded episode (30 s at 50 frames/s).
GIF_WIDTH = 320


class Events:
    """JSON lines on the real stdout; fd 1 itself then points at stderr, so that what
    TensorFlow or keras-rl2 print cannot mix with the events."""

    def __init__(self):
        self.stream = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr

    def emit(self, event, **fields):
        self.stream.write(json.dumps({"event": event, **fields}, default=_plain) + "\n")


def _plain(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


class StopCheck(Callback):
    def __init__(self, stop):
        super().__init__()
        self.stop = stop

    def on_step_begin(self, step, logs=None):
        self.stop.check()


# --- Training --------------------------------------------------------------------------------


class Checkpoints:
    """best.h5 (by the periodic tests' mean reward), last.h5 and state.json in checkpoints/."""

    def __init__(self, run_dir, agent):
        self.folder, self.agent = Path(run_dir) / "checkpoints", agent
        self.folder.mkdir(exist_ok=True)
        self.state = read_state(run_dir)

    def save(self, which, **state):
        with io.atomic_path(self.folder / f"{which}.h5", suffix=".h5") as tmp:
            self.agent.save_weights(str(tmp), overwrite=True)
        if which == "last":
            self.state.update(state)
            io.write_json(self.folder / "state.json", self.state)

    def weights(self):
        """The weights to evaluate: the best tested ones, else the last."""
        best = self.folder / "best.h5"
        return ("best", best) if best.is_file() else ("last", self.folder / "last.h5")


def play(agent, env, episodes, config, callbacks=()):
    """Test episodes (greedy up to epsilon_test, no learning); returns (rewards, lengths).

    keras-rl2's `test` starts the agent's step counter and its training flag over, so both
    are put back: this runs in the middle of training too."""
    step, training = agent.step, agent.training
    try:
        history = agent.test(env, nb_episodes=episodes, visualize=False, verbose=0,
                             nb_max_episode_steps=config.max_episode_steps or None,
                             callbacks=list(callbacks))
    finally:
        agent.step, agent.training = step, training
    return ([float(r) for r in history.history["episode_reward"]],
            [int(n) for n in history.history["nb_steps"]])


class Trainer(Callback):
    """Reports each episode, tests the agent every test_interval steps, keeps the checkpoints,
    and stops `fit` at the next step when a signal asks, or when a test reaches
    stop_at_reward."""

    def __init__(self, config, events, stop, checkpoints, test_env):
        super().__init__()
        self.config, self.events, self.stop = config, events, stop
        self.checkpoints, self.test_env = checkpoints, test_env
        state = checkpoints.state
        self.first_step, self.episodes = state["step"], state["episode"]
        self.next_test = state["next_test"] or config.test_interval
        self.best = state["best"]  # {"step", "value"} of the best test so far, or None.
        self.solved = False
        self.tested_at = None

    def on_episode_begin(self, episode, logs=None):
        if self.first_step is not None:  # keras-rl2's fit counts from 0; a resume does not.
            self.model.step, self.first_step = self.first_step, None
        self.step_metrics, self.started = [], time.monotonic()

    def on_step_begin(self, step, logs=None):
        self.stop.check()

    def on_step_end(self, step, logs=None):
        self.step_metrics.append(logs["metrics"])

    def on_episode_end(self, episode, logs=None):
        self.episodes += 1
        agent = self.model
        values = np.asarray(self.step_metrics, dtype=float).reshape(len(self.step_metrics), -1)
        means = {name: _nanmean(values[:, i]) for i, name in enumerate(agent.metrics_names)}
        self.events.emit("episode", episode=self.episodes, step=int(agent.step),
                         reward=float(logs["episode_reward"]),
                         length=int(logs["nb_episode_steps"]), loss=means.get("loss"),
                         mean_q=means.get("mean_q"), epsilon=dqn.epsilon(agent),
                         seconds=round(time.monotonic() - self.started, 4))
        if agent.step >= self.next_test:
            self.test(int(agent.step))
            if self.solved:
                raise KeyboardInterrupt  # fit's own way out; `solved` tells it from a signal.

    def test(self, step):
        rewards, lengths = play(self.model, self.test_env, self.config.test_episodes,
                                self.config, [StopCheck(self.stop)])
        mean = float(np.mean(rewards))
        improved = self.best is None or mean > self.best["value"]
        if improved:
            self.best = {"step": step, "value": mean}
            self.checkpoints.save("best")
        interval = self.config.test_interval
        self.next_test = (step // interval + 1) * interval
        self.tested_at = step
        self.save_last(step)
        self.events.emit("test", step=step, mean=mean, std=float(np.std(rewards)),
                         rewards=rewards, lengths=lengths, best=improved)
        target = self.config.stop_at_reward
        self.solved = bool(target) and mean >= target

    def save_last(self, step, fit_done=False):
        self.checkpoints.save("last", step=step, episode=self.episodes, best=self.best,
                              next_test=self.next_test, fit_done=fit_done)


def _nanmean(column):
    finite = column[np.isfinite(column)]
    return float(finite.mean()) if finite.size else None


def build_agent(config, info):
    with legacy.trusted_cloning():
        return dqn.build_agent(config, info, legacy.keras, legacy.adam(config.learning_rate))


def train(run_dir, config, info, events, stop):
    env = envs.make(config.env, config.seed)
    test_env = envs.make(config.env, config.seed + 1)
    agent = build_agent(config, info)
    checkpoints = Checkpoints(run_dir, agent)
    state = checkpoints.state
    if state["step"]:
        agent.load_weights(str(checkpoints.folder / "last.h5"))
        # The replay memory is not saved (50,000 to 1,000,000 steps): it fills again first.
        agent.nb_steps_warmup = state["step"] + config.warmup_steps
    trainer = Trainer(config, events, stop, checkpoints, test_env)
    events.emit("start", step=state["step"], steps=config.steps, episode=state["episode"],
                parameters=int(agent.model.count_params()), fit_done=state["fit_done"],
                resumed=bool(state["step"]) and not state["fit_done"],
                warmup=config.warmup_steps)
    if not state["fit_done"]:
        agent.step = state["step"]
        trainer.set_model(agent)
        if state["step"] < config.steps:  # Else a resume with --steps at the steps done.
            agent.fit(env, nb_steps=config.steps, verbose=0, callbacks=[trainer],
                      nb_max_episode_steps=config.max_episode_steps or None)
        step = int(agent.step)
        try:
            if not stop.requested and trainer.tested_at != step:
                trainer.test(step)  # The weights at the end are tested too.
        except KeyboardInterrupt:  # A signal during that test.
            pass
        if stop.requested:
            trainer.save_last(step)
            events.emit("stopped", step=step, reason=stop.requested)
            return
        trainer.save_last(step, fit_done=True)
        events.emit("trained", step=step, solved=trainer.solved)
    evaluate(run_dir, config, info, events, stop, agent, checkpoints, final=True)


# --- Evaluation ------------------------------------------------------------------------------


def evaluate(run_dir, config, info, events, stop, agent, checkpoints=None, episodes=None,
             record=None, final=False):
    """Test episodes with the run's weights (and, for the run's own evaluation, a random
    policy over as many episodes, model.h5 and a recorded episode)."""
    episodes = episodes or config.eval_episodes
    # Exploration in test episodes (epsilon_test) draws from numpy: seeded here, `dlref evaluate`
    # plays the same episodes as the run's own evaluation.
    np.random.seed(config.seed + 2)
    which, path = checkpoints.weights() if final else ("model", Path(run_dir) / "model.h5")
    agent.load_weights(str(path))
    try:
        rewards, lengths = play(agent, envs.make(config.env, config.seed + 2), episodes, config,
                                [StopCheck(stop)])
        found = {"weights": which, "rewards": rewards, "lengths": lengths}
        if final:
            found["random_rewards"], found["random_lengths"] = random_episodes(config, episodes)
            with io.atomic_path(Path(run_dir) / "model.h5", suffix=".h5") as tmp:
                agent.model.save(str(tmp))
            record = record or (Path(run_dir) / "plots" / "episode.gif"
                                if config.record_episode else None)
        if record:
            try:
                found["recording"] = record_episode(agent, config, info, record, stop)
            except KeyboardInterrupt:
                raise
            except Exception as error:  # An env that cannot draw itself: the run still ends.
                found["recording_error"] = f"{type(error).__name__}: {error}"
    except KeyboardInterrupt:
        events.emit("stopped", step=checkpoints.state["step"] if checkpoints else 0,
                    reason=stop.requested, fit_done=True)
        return
    events.emit("evaluation", **found)


def random_episodes(config, episodes):
    """The baseline: the same env played with uniformly random actions."""
    env = envs.make(config.env, config.seed + 3)
    rewards, lengths = [], []
    for _ in range(episodes):
        env.reset()
        total, length, done = 0.0, 0, False
        while not done and (not config.max_episode_steps or length < config.max_episode_steps):
            _, reward, done, _ = env.step(env.action_space.sample())
            total, length = total + reward, length + 1
        rewards.append(total)
        lengths.append(length)
    return rewards, lengths


class FrameRecorder(Callback):
    def __init__(self):
        super().__init__()
        self.frames = []

    def on_step_begin(self, step, logs=None):
        if step == 0:  # The first observation, after the reset.
            self._grab()

    def on_action_end(self, action, logs=None):
        self._grab()

    def _grab(self):
        if len(self.frames) < GIF_FRAMES:
            frame = self.env.render()
            if frame is None:
                raise ValueError("the env returned no frame in render_mode rgb_array")
            self.frames.append(frame)


def record_episode(agent, config, info, path, stop):
    """Plays one test episode with render_mode rgb_array and writes it as an animated GIF;
    returns what was recorded."""
    from PIL import Image

    env = envs.make(config.env, config.seed + 4, render_mode="rgb_array")
    recorder = FrameRecorder()
    rewards, lengths = play(agent, env, 1, config, [recorder, StopCheck(stop)])
    env.close()
    pictures = []
    for frame in recorder.frames:
        picture = Image.fromarray(np.asarray(frame, dtype=np.uint8))
        if picture.width > GIF_WIDTH:
            picture = picture.resize((GIF_WIDTH, round(picture.height * GIF_WIDTH
                                                       / picture.width)), Image.BILINEAR)
        pictures.append(picture)
    milliseconds = max(20, round(1000 / info["render_fps"]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with io.atomic_path(path, suffix=".gif") as tmp:
        pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:],
                         duration=milliseconds, loop=0)
    return {"path": str(path), "frames": len(pictures), "reward": rewards[0],
            "length": lengths[0], "cut": lengths[0] + 1 > GIF_FRAMES}


# --- Entry point -----------------------------------------------------------------------------


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m dlref.rl.worker")
    parser.add_argument("command", choices=("train", "evaluate"))
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--episodes", type=int)
    parser.add_argument("--record", type=Path)
    args = parser.parse_args(argv)
    events, stop = Events(), STOP
    manifest = io.read_json(args.run_dir / "run.json")
    values = configlib.merge(configlib.field_defaults(dqn.Config),
                             [("run.json", manifest["config"])])
    config, info = dqn.Config(**values), manifest["env_info"]
    legacy.seed_everything(config.seed)
    if args.command == "train":
        train(args.run_dir, config, info, events, stop)
    else:
        agent = build_agent(config, info)
        evaluate(args.run_dir, config, info, events, stop, agent, episodes=args.episodes,
                 record=args.record)
    events.emit("finished")


if __name__ == "__main__":
    main()
