"""What a DQN run reports: TensorBoard scalars and images written without TensorFlow, the test
metrics beside a random policy and the env's "solved" threshold, and the reward curve.

The dlref process writes these while the worker trains, and it does not import TensorFlow
(3.5 s, and a second copy of it beside the worker's), so the event files are written with
TensorBoard's record writer and protocol buffers (its EventFileWriter would import TensorFlow).
"""

import itertools
import os
import socket
import time
from pathlib import Path

import numpy as np

from dlref import io


class Board:
    """One TensorBoard event file per folder under RUN/logs (train/, test/, plots/), flushed
    after every event so that TensorBoard shows a run while it trains."""

    _files = itertools.count()

    def __init__(self, logs):
        self.logs, self.writers = Path(logs), {}

    def _writer(self, folder):
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        if folder not in self.writers:
            (self.logs / folder).mkdir(parents=True, exist_ok=True)
            name = (f"events.out.tfevents.{time.time():.0f}.{socket.gethostname()}."
                    f"{os.getpid()}.{next(self._files)}")
            writer = RecordWriter(open(self.logs / folder / name, "ab"))
            version = event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2")
            writer.write(version.SerializeToString())
            self.writers[folder] = writer
        return self.writers[folder]

    def _add(self, folder, step, value):
        from tensorboard.compat.proto import event_pb2, summary_pb2

        event = event_pb2.Event(wall_time=time.time(), step=int(step),
                                summary=summary_pb2.Summary(value=[value]))
        writer = self._writer(folder)
        writer.write(event.SerializeToString())
        writer.flush()

    def scalars(self, folder, step, values):
        from tensorboard.compat.proto import summary_pb2

        for tag, number in values.items():
            if number is not None and np.isfinite(number):
                self._add(folder, step, summary_pb2.Summary.Value(tag=tag,
                                                                  simple_value=float(number)))

    def image(self, folder, step, tag, png):
        from PIL import Image
        from tensorboard.compat.proto import summary_pb2

        with Image.open(png) as picture:
            width, height = picture.size
        encoded = summary_pb2.Summary.Image(height=height, width=width, colorspace=4,
                                            encoded_image_string=Path(png).read_bytes())
        self._add(folder, step, summary_pb2.Summary.Value(tag=tag, image=encoded))

    def close(self):
        for writer in self.writers.values():
            writer.close()
        self.writers = {}


def episode_metrics(rewards, lengths):
    """Mean and std of the episodes' reward, and their mean length."""
    return {"mean_reward": float(np.mean(rewards)), "reward_std": float(np.std(rewards)),
            "mean_episode_length": float(np.mean(lengths))}


def test_metrics(evaluation, solved):
    """metrics.json's table: episode_metrics for the agent and for random actions, with the
    env's reward threshold beside the mean reward."""
    model = episode_metrics(evaluation["rewards"], evaluation["lengths"])
    chance = episode_metrics(evaluation["random_rewards"], evaluation["random_lengths"])
    table = {name: {"model": model[name], "random": chance[name]} for name in model}
    if solved is not None:
        table["mean_reward"]["solved"] = float(solved)
    return table


def reward_curve(episodes, tests, env, solved=None, random_mean=None, best_step=None):
    """Episode rewards against steps (and their running mean of 20), the periodic tests' mean
    with its spread, the random policy's mean and the solved threshold."""
    from dlref.reports import _figure

    figure, axis = _figure(7.0, 4.2)
    if episodes:
        steps = np.array([row["step"] for row in episodes], dtype=float)
        rewards = np.array([row["reward"] for row in episodes], dtype=float)
        axis.plot(steps, rewards, color="#9ecae1", linewidth=0.7, label="training episode")
        window = min(20, len(rewards))
        running = np.convolve(rewards, np.ones(window) / window, mode="valid")
        axis.plot(steps[window - 1:], running, color="#2171b5", linewidth=1.6,
                  label=f"mean of {window} episodes")
    if tests:
        steps = [row["step"] for row in tests]
        axis.errorbar(steps, [row["mean"] for row in tests], yerr=[row["std"] for row in tests],
                      color="#d94801", marker="o", markersize=4, linewidth=1.2, capsize=3,
                      label="test episodes (mean, std)")
    if best_step is not None:
        axis.axvline(best_step, color="#d94801", linestyle=":", linewidth=1,
                     label=f"best weights (step {best_step:,})")
    if random_mean is not None:
        axis.axhline(random_mean, color="grey", linestyle="--", linewidth=1,
                     label=f"random actions ({random_mean:.1f})")
    if solved is not None:
        axis.axhline(solved, color="#238b45", linestyle="--", linewidth=1,
                     label=f"solved ({solved:g})")
    axis.set_xlabel("environment step")
    axis.set_ylabel("episode reward")
    axis.set_title(f"DQN on {env}")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="best")
    figure.tight_layout()
    return figure


def save_figure(figure, path):
    from matplotlib import pyplot

    with io.atomic_path(path, suffix=".png") as tmp:
        figure.savefig(tmp, format="png")
    pyplot.close(figure)
