"""dlref benchmarks: prints a Markdown table (copied into the README).

    make bench                 # everything
    python scripts/bench.py --quick   # smaller training data, for a smoke run

Measures, in one run on this machine:
- CLI start: `dlref --help` and `dlref list` against `python -c "import tensorflow"`.
- Training overhead: seconds per epoch of `dlref train multiclass` (every callback on) on a
  generated 60,000 x 784 MNIST-shaped table, against a bare Keras script that fits the same
  model on the same arrays with the same batch size and validation data, as a ratio.
- Throughput: samples/s and GFLOP/s, against a float32 matmul peak measured in the same run.
- Tuning (when dlref.tuning provides `benchmark`): trials per minute and RSS across trials.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
EPOCHS = 5  # The first epoch traces the graph; the median of the others is reported.
ROUNDS = 2  # dlref and bare Keras alternate, so a slow spell of a shared machine hits both.
BEST_DQN = ("hidden_units=[64, 64]", "epsilon_steps=5000")  # Fastest to 195 of those tried.


def timed(command, repeat=5):
    """Median wall seconds of a command over `repeat` runs (after one warm-up run)."""
    subprocess.run(command, capture_output=True, env=ENV, check=True)
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, env=ENV, check=True)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def cli_start():
    dlref = str(BIN / "dlref")
    return {
        "dlref --help": timed([dlref, "--help"]),
        "dlref list": timed([dlref, "list"]),
        "python -c 'import tensorflow'": timed([sys.executable, "-c", "import tensorflow"]),
    }


def make_table(path, rows, seed=0):
    """An MNIST-shaped table: 784 uint8 pixel columns and a 10-class label they determine."""
    import numpy as np

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(rows, 784), dtype=np.uint8)
    projection = rng.normal(size=(784, 10))
    labels = np.argmax((pixels / 255.0 - 0.5) @ projection + rng.normal(size=(rows, 10)), axis=1)
    header = ",".join([f"pixel_{i}" for i in range(784)] + ["label"])
    body = np.column_stack([pixels, labels])
    with open(path, "w") as handle:
        handle.write(header + "\n")
        for start in range(0, rows, 5000):
            chunk = body[start:start + 5000]
            handle.write("\n".join(",".join(map(str, row)) for row in chunk.tolist()) + "\n")


def dlref_epoch_seconds(csv_path, runs_dir):
    subprocess.run(
        [str(BIN / "dlref"), "train", "multiclass", "--data", str(csv_path), "--target",
         "label", "--epochs", str(EPOCHS), "--set", "early_stopping_patience=0",
         "--runs-dir", str(runs_dir)],
        check=True, env=ENV, capture_output=True,
    )
    manifest = json.loads(next(Path(runs_dir).glob("multiclass/*/run.json")).read_text())
    return manifest["timings"]["epoch_seconds"], manifest["data"]["rows"]["train"]


def bare_keras(csv_path, validation_batch):
    """Runs in its own process: the same data, model and batch size, one fit like dlref's.

    The only callback times epochs (it has no batch hooks). `validation_batch` 0 validates at
    Keras' default (the training batch, as a bare script does); dlref validates at 1,024.
    """
    import keras

    from dlref import registry
    from dlref.data import Source

    class EpochTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.started)

    module = registry.load("multiclass")
    config = module.Config(epochs=EPOCHS, early_stopping_patience=0)
    keras.utils.set_random_seed(config.seed)
    data = module.load_data(config, Source(data=str(csv_path), target="label"))
    model = module.build_model(config, data)
    timer = EpochTimer()
    model.fit(*data.train, validation_data=data.val, epochs=EPOCHS, batch_size=config.batch_size,
              validation_batch_size=validation_batch or None, callbacks=[timer], verbose=0)
    flops = sum(2 * w.shape[0] * w.shape[1] for w in model.weights if len(w.shape) == 2)
    print(json.dumps({"seconds": timer.seconds, "forward_flops_per_sample": flops}))


def bare_epochs(csv_path, validation_batch):
    result = subprocess.run(
        [sys.executable, __file__, "--bare", str(csv_path), "--validation-batch",
         str(validation_batch)], check=True, env=ENV, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def matmul_peak(size=2048, repeat=20):
    """float32 GFLOP/s of a square matmul: the ceiling a dense network can approach."""
    from dlref.backend import import_tensorflow

    tf = import_tensorflow()
    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    tf.matmul(a, b).numpy()
    start = time.perf_counter()
    for _ in range(repeat):
        c = tf.matmul(a, b)
    c.numpy()
    return 2 * size**3 * repeat / (time.perf_counter() - start) / 1e9


def training(rows):
    from dlref import registry
    from dlref.training import eval_batch_size

    config = registry.load("multiclass").Config()
    dlref_seconds, bare_seconds, same_validation = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        csv_path = Path(folder) / "mnist_shaped.csv"
        make_table(csv_path, rows)
        for round_ in range(ROUNDS):
            seconds, train_rows = dlref_epoch_seconds(csv_path, Path(folder) / f"runs{round_}")
            dlref_seconds += seconds[1:]
            bare = bare_epochs(csv_path, 0)
            bare_seconds += bare["seconds"][1:]
            same_validation += bare_epochs(csv_path, eval_batch_size(config))["seconds"][1:]
    dlref_epoch = statistics.median(dlref_seconds)
    bare_epoch = statistics.median(bare_seconds)
    same_epoch = statistics.median(same_validation)
    samples_per_second = train_rows / dlref_epoch
    # Training costs about three forward passes: forward, and two matmuls backward.
    gflops = 3 * bare["forward_flops_per_sample"] * samples_per_second / 1e9
    return {"rows": rows, "train_rows": train_rows, "dlref_epoch": dlref_epoch,
            "bare_epoch": bare_epoch, "ratio": dlref_epoch / bare_epoch,
            "same_epoch": same_epoch, "callbacks_ratio": dlref_epoch / same_epoch,
            "epochs": len(dlref_seconds), "samples_per_second": samples_per_second,
            "gflops": gflops}


def recipe_throughput(recipe, *options, epochs=6):
    """Training samples/s of `dlref train RECIPE [OPTIONS]` on built-in data (median epoch
    after the first, which traces the graph), every callback on."""
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([str(BIN / "dlref"), "train", recipe, *options, "--epochs", str(epochs),
                        "--set", "early_stopping_patience=0", "--runs-dir", folder],
                       check=True, env=ENV, capture_output=True)
        manifest = json.loads(next(Path(folder).glob("*/*/run.json")).read_text())  # Presets too.
    epoch = statistics.median(manifest["timings"]["epoch_seconds"][1:])
    return manifest["data"]["rows"]["train"] / epoch, epoch


def transfer_throughput(images=160, size=224, epochs=6):
    """Images/s of `dlref train transfer` (mobilenet_v2, random weights: offline) on a generated
    folder at the base's input size: stage 1 (base frozen) and stage 2 (top fifth fine-tuned),
    each the median of its epochs after its first (which traces the graph)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        for index in range(images):
            path = Path(folder, "photos", f"class_{index % 4}", f"{index}.jpg")
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
        feature = epochs // 2
        subprocess.run([str(BIN / "dlref"), "train", "transfer", "--data",
                        str(Path(folder, "photos")), "--weights", "none", "--epochs", str(epochs),
                        "--set", f"feature_epochs={feature}", "--set", "early_stopping_patience=0",
                        "--set", "scratch_baseline=false", "--runs-dir", folder],
                       check=True, env=ENV, capture_output=True)
        manifest = json.loads(next(Path(folder).glob("transfer/*/run.json")).read_text())
    seconds = manifest["timings"]["epoch_seconds"]
    rows = manifest["data"]["rows"]["train"]
    return rows, [rows / statistics.median(part[1:]) for part in (seconds[:feature],
                                                                  seconds[feature:])]


def dqn_cartpole(target, *settings, seed=0, interval=2500):
    """`dlref train dqn` (CartPole-v1) until the mean of 20 test episodes, run every `interval`
    steps, reaches `target`, or the 50,000 steps of the book: the first step it reached 195
    and 475 at, wall time from the command's start, and training steps/s (tests left out)."""
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        subprocess.run([str(BIN / "dlref"), "train", "dqn", "--seed", str(seed),
                        "--set", f"test_interval={interval}", "--set", "test_episodes=20",
                        "--set", f"stop_at_reward={target}", "--set", "record_episode=false",
                        *settings, "--runs-dir", folder], check=True, env=ENV,
                       capture_output=True)
        seconds = time.perf_counter() - started
        run_dir = next(Path(folder).glob("dqn/*"))
        manifest = json.loads((run_dir / "run.json").read_text())
        lines = (run_dir / "tests.csv").read_text().splitlines()[1:]
    tests = [(int(line.split(",")[0]), float(line.split(",")[1])) for line in lines]
    reached = {goal: next((step for step, mean in tests if mean >= goal), None)
               for goal in (195, 475)}
    return {"reached": reached, "minutes": seconds / 60, "steps": manifest["steps_completed"],
            "steps_per_second": manifest["timings"]["steps_per_second"]}


def _dqn_row(what, found):
    reached = "; ".join(f"{goal} at step {step:,}" if step else f"{goal} not reached"
                        for goal, step in found["reached"].items())
    return (f"| train dqn, CartPole-v1, {what}: mean of 20 test episodes | {reached} "
            f"({found['steps']:,} steps, {found['minutes']:.1f} min, "
            f"{found['steps_per_second']:,.0f} steps/s) |")


def tuning():
    try:
        from dlref.tuning import benchmark
    except ImportError:
        return None
    return benchmark()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="6,000 rows instead of 60,000")
    parser.add_argument("--bare", help=argparse.SUPPRESS)
    parser.add_argument("--validation-batch", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        return bare_keras(args.bare, args.validation_batch)
    start = cli_start()
    train = training(6000 if args.quick else 60000)
    peak = matmul_peak()
    print(f"\n## dlref benchmark ({os.cpu_count()} cores, {time.strftime('%Y-%m-%d')})\n")
    print("| measure | value |\n|---|---|")
    for command, seconds in start.items():
        print(f"| start: `{command}` | {seconds:.2f} s |")
    print(f"| train multiclass, {train['rows']:,} x 784 ({train['train_rows']:,} train rows), "
          f"s/epoch, dlref, all callbacks | {train['dlref_epoch']:.2f} s |")
    print(f"| same model, data and batch, bare Keras `fit` | {train['bare_epoch']:.2f} s |")
    print(f"| overhead ratio dlref / bare, median of {train['epochs']} epochs each "
          f"(goal < 1.10) | {train['ratio']:.3f} |")
    print(f"| bare Keras with dlref's validation batch (1,024) | {train['same_epoch']:.2f} s |")
    print(f"| callbacks alone: dlref / bare at the same validation batch | "
          f"{train['callbacks_ratio']:.3f} |")
    print(f"| throughput | {train['samples_per_second']:,.0f} samples/s |")
    print(f"| achieved / matmul peak | {train['gflops']:.1f} / {peak:.1f} GFLOP/s "
          f"({100 * train['gflops'] / peak:.0f} %) |")
    samples, epoch = recipe_throughput("timeseries")
    print(f"| train timeseries, built-in CO2 (361 windows of 10), s/epoch; samples/s | "
          f"{epoch:.2f} s; {samples:,.0f} samples/s |")
    for model in ("cnn", "lstm"):
        samples, epoch = recipe_throughput("text", "--set", f"model={model}", epochs=3)
        print(f"| train text, {model}, built-in IMDB reviews (17,500 train, 400 words), "
              f"s/epoch; samples/s | {epoch:.1f} s; {samples:,.0f} samples/s |")
    samples, epoch = recipe_throughput("seq2seq", epochs=4)
    print(f"| train seq2seq, built-in numbers (800 train pairs, LSTM(256) x2), s/epoch; "
          f"samples/s | {epoch:.1f} s; {samples:,.0f} samples/s |")
    for name, what in (("cnn", "the book's CIFAR-10 network"),
                       ("cnn-augmented", "with augmentation layers")):
        samples, epoch = recipe_throughput(name, epochs=4)
        print(f"| train {name}, built-in digits (3,500 train, 28x28), {what}, s/epoch; "
              f"images/s | {epoch:.1f} s; {samples:,.0f} images/s |")
    rows, (frozen, tuned) = transfer_throughput()
    print(f"| train transfer, mobilenet_v2 at 224x224 ({rows} train images), images/s: base "
          f"frozen; top fifth fine-tuned | {frozen:,.0f}; {tuned:,.0f} images/s |")
    samples, epoch = recipe_throughput("gan", epochs=3)
    print(f"| train gan, built-in digits (3,500 train), DCGAN, s/epoch; images/s | "
          f"{epoch:.1f} s; {samples:,.0f} images/s |")
    print(_dqn_row("the book's settings", dqn_cartpole(475)))
    print(_dqn_row("best found (" + ", ".join(BEST_DQN) + ")",
                   dqn_cartpole(475, *[part for setting in BEST_DQN
                                       for part in ("--set", setting)])))
    tune = tuning()
    for name, value in (tune or {}).items():
        print(f"| tune: {name} | {value} |")


if __name__ == "__main__":
    sys.exit(main())
