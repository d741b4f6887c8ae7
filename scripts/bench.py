"""dlref benchmarks: prints Markdown tables (copied into the README).

    make bench                                   # everything
    python scripts/bench.py --quick              # smaller data, fewer epochs: a smoke run
    python scripts/bench.py --sections recipes --recipes multiclass,gan --backends jax

Measures, in one run on this machine:
- CLI start: `dlref --help` and `dlref list` against `python -c "import tensorflow"`.
- Every Keras recipe on each backend, at its default batch and at 1,024: samples/s of
  `dlref train` (every callback on) beside a bare Keras `fit` of the same model on the same data
  and backend, their ratio, and GFLOP/s against a float32 matmul peak measured in the same run
  on each backend; which backend each recipe declares and which was faster; the goals of the
  issue, judged from these figures.
- Training overhead of multiclass on a generated 60,000 x 784 MNIST-shaped table, with bare
  Keras also at dlref's validation batch (what the callbacks alone cost).
- DQN on CartPole (keras-rl2) to a mean test reward of 475, and tuning (when dlref.tuning
  provides `benchmark`): trials per minute and RSS across trials.

Every training measurement runs in its own process: a process loads one Keras backend only.
"""

import argparse
import dataclasses
import json
import math
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
BACKENDS = ("tensorflow", "jax")
SECTIONS = ("start", "recipes", "overhead", "dqn", "tune")
EPOCHS = 3  # The first epoch compiles; the mean of the others is reported (quick: 2).
# Cases whose epochs take a few seconds at most here run more: dlref writes its checkpoints in
# rounds on short epochs (dlref.resumable.WritePace), and the mean must include some.
SHORT_EPOCHS = 10
# Runs of dlref and of bare Keras per cell for those cases, in turn; the fastest of each is kept.
# One pair of runs of 10 epochs of 0.1 s differed by 10-30 % from the next pair here.
SHORT_PAIRS = 2
BIG_BATCH = 1024
CELL_TIMEOUT = 900  # Seconds; a cell that takes longer is reported as failed.
BEST_DQN = ("hidden_units=[64, 64]", "epsilon_steps=5000")  # Fastest to 195 of those tried.

# The issue's goals. BARE_TF_BOOK_BATCH: bare TensorFlow Keras on the 60,000-row multiclass
# table at batch 32 when the goals were set, in samples/s.
BARE_TF_BOOK_BATCH = 8028
GOAL_SPEEDUP = 2.5
GOAL_PEAK_SHARE = 0.75
GOAL_RATIO = 1.10
DENSE = ("regression", "binary", "multiclass")


@dataclasses.dataclass(frozen=True)
class Case:
    """One recipe row of the per-recipe section.

    Args:
        label: the row's name, and what --recipes selects (with the recipe's own name).
        name: the recipe or preset that `dlref train` gets.
        data: the row's words for its data.
        sets: --set overrides beyond epochs, batch size and early stopping.
        generated: "regression", "binary" or "multiclass" for a generated table, "images" for
            a generated image folder, "" for the recipe's built-in data.
        short: the backends its epochs are short on (seconds at most): `short_epochs` and
            SHORT_PAIRS there.
        short_epochs: epochs per measurement on those backends.
    """

    label: str
    name: str
    data: str
    sets: tuple = ()
    generated: str = ""
    short: tuple = ()
    short_epochs: int = SHORT_EPOCHS

    def epochs(self, default, backend):
        """Epochs per measurement: `default` (EPOCHS, or --quick's), more for short epochs."""
        return self.short_epochs if backend in self.short and default == EPOCHS else default

    def pairs(self, wanted, backend):
        """Runs of dlref and of bare Keras per measurement: `wanted` (--pairs) where it is not
        0; else SHORT_PAIRS for short epochs, 1 for the others."""
        return wanted or (SHORT_PAIRS if backend in self.short else 1)

    @property
    def recipe(self):
        """The recipe's name (a preset's recipe: text for text-lstm)."""
        from dlref import registry

        return registry.resolve(self.name)[0]

    def selected(self, wanted):
        """Whether --recipes names its label, recipe or preset (or is empty: every case)."""
        return not wanted or bool({self.label, self.name, self.recipe} & set(wanted))


def cases(quick):
    """The rows of the per-recipe section, in the book's order (dqn, keras-rl2, is left out)."""
    rows = table_rows(quick)
    table = f"generated {rows:,} x 784 table"
    images, size = transfer_images(quick)
    # IMDB's 25,000 reviews at batch 32 take about 30 s (cnn) and 50 s (lstm) an epoch here:
    # 11 % of them train, 1,000 validate, so that each takes seconds.
    few_texts = ("val_fraction=0.04", "test_fraction=0.85")
    return [
        Case("regression", "regression", f"{table}, continuous target", generated="regression",
             short=BACKENDS),
        Case("binary", "binary", f"{table}, 2 classes", generated="binary", short=BACKENDS),
        Case("multiclass", "multiclass", f"{table}, 10 classes", generated="multiclass",
             short=BACKENDS),
        Case("cnn", "cnn", "built-in digits, 28x28"),
        Case("cnn-augmented", "cnn-augmented", "built-in digits, 28x28, augmentation layers"),
        # Epochs of 0.05-0.15 s: over 10 of them two runs in turn differed by more than dlref
        # adds.
        Case("timeseries", "timeseries", "built-in CO2, windows of 10", short=BACKENDS,
             short_epochs=3 * SHORT_EPOCHS),
        Case("text-cnn", "text", "built-in IMDB, 11 % of it, Conv1D x3", few_texts),
        Case("text-lstm", "text-lstm", "built-in IMDB, 11 % of it, LSTM(10)", few_texts),
        Case("seq2seq", "seq2seq", "built-in numbers, LSTM(256) x2"),
        Case("gan", "gan", "built-in digits, DCGAN (judge: 1 epoch)", ("judge_epochs=1",)),
        Case("transfer", "transfer", f"generated folder, {images} images at {size}x{size}, "
             "mobilenet_v2 frozen (stage 1)",
             ("weights=none", "scratch_baseline=false", f"image_size={size}"),
             generated="images", short=("tensorflow",)),
    ]


def table_rows(quick):
    return 6000 if quick else 60000


def transfer_images(quick):
    """(images, pixels a side) of the generated transfer folder: mobilenet_v2's own 224, or
    96 for a quick run."""
    return (48, 96) if quick else (160, 224)


# --- Generated data --------------------------------------------------------------------------


def make_table(path, rows, task="multiclass", seed=0):
    """An MNIST-shaped table (Parquet): 784 uint8 pixel columns and a target `label` they
    determine: one of 10 classes, one of 2, or a continuous value."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(rows, 784), dtype=np.uint8)
    scores = (pixels / 255.0 - 0.5) @ rng.normal(size=(784, 10)) + rng.normal(size=(rows, 10))
    label = {"multiclass": lambda: np.argmax(scores, axis=1),
             "binary": lambda: (scores[:, 0] > scores[:, 1]).astype(int),
             "regression": lambda: scores[:, 0]}[task]()
    frame = pd.DataFrame(pixels, columns=[f"pixel_{i}" for i in range(784)])
    frame["label"] = label
    frame.to_parquet(path)


def make_images(folder, images, size, seed=0):
    """A folder of random JPEG images in 4 class sub-folders; returns its path."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for index in range(images):
        path = Path(folder, "photos", f"class_{index % 4}", f"{index}.jpg")
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return Path(folder, "photos")


def case_args(case, folder, quick):
    """The `dlref train` arguments of a case (without epochs, batch size and backend), making
    its generated data in `folder` when it has none there yet."""
    args = [case.name]
    if case.generated == "images":
        photos = Path(folder, "photos")
        if not photos.is_dir():
            make_images(folder, *transfer_images(quick))
        args += ["--data", str(photos)]
    elif case.generated:
        path = Path(folder, f"{case.generated}.parquet")
        if not path.is_file():
            make_table(path, table_rows(quick), case.generated)
        args += ["--data", str(path), "--target", "label"]
    for setting in case.sets:
        args += ["--set", setting]
    return args


# --- One measurement, each in its own process --------------------------------------------------


class CellFailed(Exception):
    """A measurement failed; its message is the last line of the process's stderr."""


def _last_line(text):
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no error message"


def dlref_cell(args, backend, epochs, folder):
    """Samples/s of `dlref train ARGS --backend BACKEND` (mean epoch after the first).

    Its test evaluation and baselines (HistGradientBoosting on 42,000 x 784 takes a minute)
    are no part of the measure: the process is ended once run.json has its epoch timings.
    """
    runs_dir = Path(tempfile.mkdtemp(dir=folder, prefix="runs-"))
    command = [str(BIN / "dlref"), "train", *args, "--backend", backend, "--epochs", str(epochs),
               "--set", "early_stopping_patience=0", "--runs-dir", str(runs_dir)]
    with open(runs_dir / "stderr.txt", "w+") as errors:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=errors, env=ENV)
        manifest, started = {}, time.perf_counter()
        while process.poll() is None and time.perf_counter() - started < CELL_TIMEOUT:
            manifest = _manifest(runs_dir)
            if "timings" in manifest:
                break
            time.sleep(0.5)
        manifest = _manifest(runs_dir)
        if process.poll() is None:
            process.kill()
            process.wait()
        errors.seek(0)
        message = _last_line(errors.read())
    seconds = manifest.get("timings", {}).get("epoch_seconds")
    if not seconds:
        raise CellFailed(message)
    if manifest.get("backend") != backend:
        raise CellFailed(f"ran on {manifest.get('backend')}, not {backend}")
    return _throughput(seconds, manifest["data"]["rows"]["train"])


def _manifest(runs_dir):
    """The run.json of the one run under `runs_dir`, or {} before there is one."""
    found = next(runs_dir.glob("*/*/run.json"), None)  # recipe/run (a preset's runs too).
    try:
        return json.loads(found.read_text()) if found else {}
    except json.JSONDecodeError:
        return {}


def _throughput(seconds, rows):
    # The mean, not the median: an epoch with a round of checkpoint writes counts.
    epoch = statistics.mean(seconds[1:] or seconds)
    return {"epoch": epoch, "rows": rows, "samples_per_second": rows / epoch}


def bare_cell(args, backend, epochs, validation_batch=0):
    """Samples/s of a bare Keras `fit` of the recipe's model on its data (see bare_keras), and
    the model's training FLOPs per sample (None where they are not computed)."""
    command = [sys.executable, __file__, "--bare", backend, *args, "--epochs", str(epochs),
               "--validation-batch", str(validation_batch)]
    try:
        result = subprocess.run(command, env=ENV, capture_output=True, text=True,
                                timeout=CELL_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise CellFailed(f"over {CELL_TIMEOUT} s") from None
    if result.returncode:
        raise CellFailed(_last_line(result.stderr))
    found = json.loads(result.stdout.strip().splitlines()[-1])
    return {**_throughput(found["seconds"], found["rows"]), "flops": found["flops"],
            "ceiling": found["ceiling"]}


def bare_parser():
    parser = argparse.ArgumentParser(prog="bench.py --bare BACKEND")
    parser.add_argument("backend", choices=BACKENDS)
    parser.add_argument("name")
    parser.add_argument("--data")
    parser.add_argument("--target")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--validation-batch", type=int, default=0)
    return parser


def bare_keras(args):
    """Runs in its own process: the recipe's own data and model (through the registry, on
    `args.backend`), trained by one plain `fit` at the same batch size; prints JSON.

    The only callback times epochs (it has no batch hooks). `validation_batch` 0 validates at
    Keras' default (the training batch, as a bare script does); dlref validates at 1,024.
    """
    os.environ["KERAS_BACKEND"] = args.backend
    from dlref import registry, training
    from dlref.data import Source

    recipe, _, values = training.resolve_config(args.name, overrides=args.set,
                                                 epochs=args.epochs)
    module = registry.load(recipe)
    import keras

    if keras.backend.backend() != args.backend:
        raise SystemExit(f"Keras runs on {keras.backend.backend()}, not {args.backend}")

    class EpochTimer(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self.started)

    config = module.Config(**values)
    data = training.seeded_load(module, config, Source(data=args.data, target=args.target))
    model = module.build_model(config, data)
    timer = EpochTimer()
    model.fit(*data.train, validation_data=data.val, epochs=config.epochs,
              batch_size=config.batch_size, validation_batch_size=args.validation_batch or None,
              callbacks=[timer], verbose=0)
    print(json.dumps({"seconds": timer.seconds, "rows": len(data.train[1]),
                      "flops": training_flops(model),
                      "ceiling": (matmul_ceiling(model, config.batch_size, args.backend)
                                  if config.batch_size >= BIG_BATCH else None)}))


def training_flops(model):
    """Training FLOPs per sample, counting 2 per multiply-add of Dense, Conv1D, Conv2D,
    Conv2DTranspose and LSTM layers: the forward pass, the gradient of the weights (as much
    again) and, for a layer after one with weights, the gradient of its input (as much again).
    The first layer with weights gets no input gradient (nothing before it needs one; both
    backends leave it out), so a network whose first layer holds most of its work, like
    regression's 784-32-1, trains at about 2x its forward pass, not 3x. An LSTM's recurrent
    matmuls need their input gradient in any layer. None where a layer's cost is not known
    here: a nested model (transfer's base, the GAN's two networks) or another layer with
    trainable weights. Layers without them (pooling, dropout, augmentation) and embedding
    look-ups count 0. None too where a length is unknown until the data comes (seq2seq's
    sequences)."""
    import keras

    total, after_weights = 0, False
    for layer in model.layers:
        kind = type(layer).__name__
        kernel = getattr(layer, "kernel", None)
        passes = 3 if after_weights else 2  # Forward, weights' gradient, input's gradient.
        if kind == "Dense":
            positions = _size(layer.output.shape[1:-1])  # Dense on sequences: per step.
            total = _add(total, passes * 2 * math.prod(kernel.shape), positions)
        elif kind in ("Conv1D", "Conv2D"):
            total = _add(total, passes * 2 * math.prod(kernel.shape),
                         _size(layer.output.shape[1:-1]))
        elif kind == "Conv2DTranspose":
            total = _add(total, passes * 2 * math.prod(kernel.shape),
                         _size(_first(layer.input).shape[1:-1]))
        elif kind == "LSTM":
            cell = layer.cell
            steps = _first(layer.input).shape[1]
            total = _add(total, passes * 2 * math.prod(cell.kernel.shape)
                         + 3 * 2 * math.prod(cell.recurrent_kernel.shape), steps)
        elif isinstance(layer, keras.Model):
            return None  # A nested model.
        elif layer.trainable_weights and kind not in ("Embedding", "BatchNormalization"):
            return None
        after_weights = after_weights or bool(layer.trainable_weights)
    return total


def matmul_ceiling(model, batch, backend, repeat=3, seconds=0.2):
    """GFLOP/s of the matmuls one training step of a network of Dense layers makes at `batch`
    (training_matmuls), each compiled and timed alone on `backend` (the fastest of `repeat`
    rounds of about `seconds`): their FLOPs over the sum of their times. What the network's
    shapes allow on this machine, before activations, the loss and the optimizer: a narrow
    layer's matmuls run far under the square matmul peak. Measured at large batches only (at
    small ones, calling each matmul alone costs more than the matmul). None where a layer with
    weights is not a Dense layer on flat inputs."""
    import keras

    matmuls = training_matmuls(model, batch)
    if not matmuls:
        return None
    compiled = _compiler(backend)
    total_flops = total_seconds = 0
    for transposed, left, right, flops in matmuls:
        a, b = keras.random.normal(left), keras.random.normal(right)
        step = compiled(lambda a, b, t=transposed: keras.ops.matmul(
            keras.ops.transpose(a) if t == "left" else a,
            keras.ops.transpose(b) if t == "right" else b))
        _wait(step(a, b))  # Compiles.
        start = time.perf_counter()
        _wait(step(a, b))
        calls = min(10_000, max(1, int(seconds / (time.perf_counter() - start))))
        best = math.inf
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(calls):
                result = step(a, b)
            _wait(result)
            best = min(best, (time.perf_counter() - start) / calls)
        total_flops, total_seconds = total_flops + flops, total_seconds + best
    return total_flops / total_seconds / 1e9


def training_matmuls(model, batch):
    """The matmuls of one training step at `batch` of a network whose layers with weights are
    Dense layers on flat inputs, as (which operand is transposed: "", "left" or "right", its
    left shape, its right shape, FLOPs): per layer x @ W (forward), x.T @ dy (the weights'
    gradient) and, after a layer with weights, dy @ W.T (the input's gradient), as
    training_flops counts them. None for other networks."""
    matmuls, after_weights = [], False
    for layer in model.layers:
        if not layer.trainable_weights:
            continue
        if type(layer).__name__ != "Dense" or len(layer.input.shape) != 2:
            return None
        inputs, units = layer.kernel.shape
        flops = 2 * batch * inputs * units
        matmuls += [("", (batch, inputs), (inputs, units), flops),
                    ("left", (batch, inputs), (batch, units), flops)]
        if after_weights:
            matmuls.append(("right", (batch, units), (inputs, units), flops))
        after_weights = True
    return matmuls


def _compiler(backend):
    """Compiles a function of tensors as the backend's training step is compiled (XLA)."""
    if backend == "jax":
        import jax

        return jax.jit
    import tensorflow as tf

    return lambda function: tf.function(function, jit_compile=True)


def _wait(tensor):
    """Blocks until `tensor` is computed."""
    return tensor.block_until_ready() if hasattr(tensor, "block_until_ready") else tensor.numpy()


def _size(shape):
    """Elements of a shape, or None when a dimension is unknown."""
    return None if None in shape else math.prod(shape)


def _add(total, flops, times):
    """total + flops x times, None once either is unknown."""
    return None if total is None or times is None else total + flops * times


def _first(tensors):
    return tensors[0] if isinstance(tensors, (list, tuple)) else tensors


def peak_cell(backend):
    """float32 matmul GFLOP/s on `backend`, measured in its own process (see matmul_peak)."""
    result = subprocess.run([sys.executable, __file__, "--peak", backend], env=ENV,
                            capture_output=True, text=True, timeout=CELL_TIMEOUT)
    if result.returncode:
        raise CellFailed(_last_line(result.stderr))
    return float(result.stdout.strip().splitlines()[-1])


def matmul_peak(backend, size=2048, repeat=20):
    """float32 GFLOP/s of a square matmul through Keras on `backend`: the ceiling a dense
    network can approach."""
    os.environ["KERAS_BACKEND"] = backend
    from dlref.backend import import_tensorflow

    import_tensorflow()  # Quietly, as dlref does; Keras imports it on either backend.
    import keras

    a = keras.random.normal((size, size))
    b = keras.random.normal((size, size))
    _wait(keras.ops.matmul(a, b))
    start = time.perf_counter()
    for _ in range(repeat):
        _wait(keras.ops.matmul(a, b))
    print(2 * size**3 * repeat / (time.perf_counter() - start) / 1e9)


# --- The per-recipe section ------------------------------------------------------------------


@dataclasses.dataclass(eq=False)  # Hashed by identity.
class Cell:
    """One recipe x batch x backend: dlref's and bare Keras' figures, or why there are none."""

    case: Case
    batch: int
    backend: str
    declared: str  # The recipe's BACKEND.
    dlref: dict = None
    bare: dict = None
    skipped: str = ""  # Why the backend was not measured.
    dlref_error: str = ""
    bare_error: str = ""
    runs: int = 0  # Measurements of each side; the fastest is kept.

    @property
    def is_declared(self):
        return self.backend == self.declared

    @property
    def ratio(self):
        """dlref's seconds per epoch over bare Keras' (above 1: dlref is slower)."""
        if self.dlref and self.bare:
            return self.bare["samples_per_second"] / self.dlref["samples_per_second"]
        return None

    def gflops(self):
        """dlref's training GFLOP/s, or None where the FLOPs are not computed."""
        if self.dlref and self.bare and self.bare["flops"]:
            return self.bare["flops"] * self.dlref["samples_per_second"] / 1e9
        return None


def measure_cell(cell, args, epochs, pairs, folder):
    """Fills in `cell`: dlref's and bare Keras' fastest of `pairs` runs each, in turn (dlref,
    bare, bare, dlref, ...) so that a machine getting slower or faster weighs on both alike."""
    for index in range(pairs):
        for side in ("dlref", "bare")[::1 if index % 2 == 0 else -1]:
            if getattr(cell, f"{side}_error"):
                continue
            try:
                found = (dlref_cell(args, cell.backend, epochs, folder) if side == "dlref"
                         else bare_cell(args, cell.backend, epochs))
            except CellFailed as error:
                setattr(cell, f"{side}_error", str(error))
                setattr(cell, side, None)
                continue
            kept = getattr(cell, side)
            if kept is None or found["epoch"] < kept["epoch"]:
                setattr(cell, side, found)
        cell.runs = index + 1


BATCH_COLUMNS = ("default", str(BIG_BATCH))


def recipe_section(selected, backends, epochs, quick, folder, pairs=0, columns=BATCH_COLUMNS):
    """Measures every selected case on every backend at its default batch and at 1,024 (the
    `columns` of BATCH_COLUMNS); returns (cells, {backend: matmul peak GFLOP/s or an error
    string}, {recipe: info})."""
    from dlref import registry, training

    peaks = {}
    for backend in backends:
        try:
            peaks[backend] = peak_cell(backend)
        except CellFailed as error:
            peaks[backend] = f"failed: {error}"
    cells, infos = [], {}
    for case in selected:
        recipe, _, values = training.resolve_config(case.name, overrides=case.sets)
        info = infos[case.label] = registry.info(recipe)
        args = case_args(case, folder, quick)
        chosen = [values["batch_size"] if column == "default" else BIG_BATCH
                  for column in columns]
        for batch in dict.fromkeys(chosen):
            for backend in backends:
                cell = Cell(case, batch, backend, info.get("backend", "tensorflow"))
                cells.append(cell)
                if backend not in info.get("backends", BACKENDS):
                    cell.skipped = f"{recipe} runs on {' or '.join(info['backends'])} only"
                    continue
                sized = [*args, "--set", f"batch_size={batch}"]
                started = time.perf_counter()
                measure_cell(cell, sized, case.epochs(epochs, backend),
                             case.pairs(pairs, backend), folder)
                runs = f"{cell.runs} run{'s' * (cell.runs > 1)}"
                print(f"measured {case.label}, batch {batch}, {backend}: dlref "
                      f"{_samples(cell.dlref, cell.dlref_error)} samples/s, bare "
                      f"{_samples(cell.bare, cell.bare_error)} ({runs} each, "
                      f"{time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    return cells, peaks, infos


def _faster(cells):
    """{(label, batch): the backend with the most dlref samples/s}, where both were measured."""
    best = {}
    for cell in cells:
        if cell.dlref:
            key = (cell.case.label, cell.batch)
            if key not in best or cell.dlref["samples_per_second"] > best[key][1]:
                best[key] = (cell.backend, cell.dlref["samples_per_second"])
    measured = {}
    for cell in cells:
        measured.setdefault((cell.case.label, cell.batch), []).append(bool(cell.dlref))
    return {key: backend for key, (backend, _) in best.items() if sum(measured[key]) > 1}


def print_recipe_table(cells, peaks, infos, epochs):
    """The per-recipe table, each backend's peak, which backend each recipe uses, the goals."""
    faster = _faster(cells)
    print(f"\n### Every recipe on both backends ({os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')})\n")
    short = {}  # Epochs: the cases that run them.
    for c in cells:
        if c.backend in c.case.short:
            where = f"{c.case.label} on {c.backend}" if len(c.case.short) == 1 else c.case.label
            short.setdefault(c.case.short_epochs, {})[where] = None
    more = (", " + ", ".join(f"{count} for {', '.join(where)}" for count, where in short.items())
            + ", whose epochs are short: the mean then includes rounds of checkpoint writes"
            if short and epochs == EPOCHS else "")
    measured = [cell for cell in cells if cell.runs]
    several = list(dict.fromkeys(cell.case.label for cell in measured if cell.runs > 1))
    repeated = ""
    if several:
        where = ("every cell" if all(cell.runs > 1 for cell in measured)
                 else f"the cells of {', '.join(several)}")
        repeated = (f" dlref and bare ran {max(cell.runs for cell in measured)} times each, in "
                    f"turn, for {where}, the fastest of each shown.")
    print(f"Samples/s: training rows over the mean epoch after the first ({epochs} epochs"
          f"{more}; the first compiles).{repeated} dlref: `dlref train`, every callback on; "
          "bare: one Keras `fit` of the same model on the same data and backend. dlref/bare: "
          "seconds per epoch, dlref over bare. GFLOP/s: the training FLOPs per sample of the "
          "Dense, Conv and LSTM layers (forward, weight gradients and the input gradients of "
          "all but the first layer), at dlref's samples/s; n/a where not computed. "
          "Backend: * = faster of the two at that batch.\n")
    print("| recipe | data | batch | backend | dlref samples/s | bare samples/s | dlref/bare "
          "| GFLOP/s (% of peak) | declared backend |")
    print("|---|---|---:|---|---:|---:|---:|---:|---|")
    for cell in cells:
        mark = " *" if faster.get((cell.case.label, cell.batch)) == cell.backend else ""
        if cell.skipped:
            figures = ["—"] * 4
        else:
            figures = [_samples(cell.dlref, cell.dlref_error),
                       _samples(cell.bare, cell.bare_error),
                       f"{cell.ratio:.2f}" if cell.ratio else "—",
                       _gflops(cell, peaks)]
        print(f"| {cell.case.label} | {cell.case.data} | {cell.batch:,} | "
              f"{cell.backend}{mark} | {' | '.join(figures)} | {cell.declared} |")
    print()
    for backend, peak in peaks.items():
        shown = f"{peak:.1f} GFLOP/s" if isinstance(peak, float) else peak
        print(f"- float32 matmul peak (2048 x 2048) on {backend}: {shown}")
    print_backend_choices(cells, infos, faster)
    print_goals(cells, peaks)


def _samples(found, error):
    return f"{found['samples_per_second']:,.0f}" if found else f"failed: {error}"


def _gflops(cell, peaks):
    gflops, peak = cell.gflops(), peaks.get(cell.backend)
    if gflops is None:
        return "n/a"
    share = f" ({100 * gflops / peak:.0f} %)" if isinstance(peak, float) else ""
    return f"{gflops:.1f}{share}"


def print_backend_choices(cells, infos, faster):
    """One line per recipe: the backend it declares (BACKEND), where it may run (BACKENDS),
    and the faster one measured at each batch."""
    print("\nBackends: what each recipe declares (its BACKEND) and what was faster here.\n")
    for label, info in infos.items():
        declared = info.get("backend", "tensorflow")
        only = info.get("backends")
        where = f"; runs on {' or '.join(only)} only (BACKENDS)" if only else ""
        measured = [f"{backend} at batch {batch:,}" for (name, batch), backend in faster.items()
                    if name == label]
        shown = ", ".join(measured) if measured else "not compared"
        print(f"- {label}: declares {declared}{where}; faster here: {shown}")


def _remarks(cell, peaks):
    """' (declared; its matmuls alone: N %)': whether the backend is the declared one, and
    matmul_ceiling's share of the peak where the bare run measured it."""
    ceiling = cell.bare and cell.bare.get("ceiling")
    said = (["declared"] if cell.is_declared else []) + (
        [f"its matmuls alone: {100 * ceiling / peaks[cell.backend]:.0f} %"] if ceiling else [])
    return f" ({'; '.join(said)})" if said else ""


def print_goals(cells, peaks):
    """The issue's three goals, each judged from this run's figures on the backend each dense
    recipe declares (the other backend's figure beside it)."""
    print("\nGoals (from this run's figures):\n")
    target = GOAL_SPEEDUP * BARE_TF_BOOK_BATCH
    dense = [c for c in cells if c.case.label in DENSE and c.dlref]
    book = [c for c in dense if c.batch != BIG_BATCH]
    if book:
        met = all(c.dlref["samples_per_second"] >= target for c in book if c.is_declared)
        print(f"- Dense recipes at the book's batch, at least {GOAL_SPEEDUP}x the bare "
              f"TensorFlow {BARE_TF_BOOK_BATCH:,} samples/s ({target:,.0f}) on the declared "
              f"backend: {'met' if met else 'not met'} ("
              + ", ".join(f"{c.case.label} {c.backend} {c.dlref['samples_per_second']:,.0f}"
                          f"{' (declared)' if c.is_declared else ''}" for c in book) + ").")
    big = {c: c.gflops() / peaks[c.backend] for c in dense if c.batch == BIG_BATCH
           and c.gflops() is not None and isinstance(peaks.get(c.backend), float)}
    if big:
        met = all(share >= GOAL_PEAK_SHARE for c, share in big.items() if c.is_declared)
        print(f"- Dense recipes at batch {BIG_BATCH:,}, at least {GOAL_PEAK_SHARE:.0%} of the "
              f"matmul peak of the same backend, on the declared backend: "
              f"{'met' if met else 'not met'} ("
              + ", ".join(f"{c.case.label} {c.backend} {100 * share:.0f} %"
                          f"{_remarks(c, peaks)}" for c, share in big.items()) + ").")
    compared = [c for c in cells if c.ratio is not None]
    if compared:
        over = [c for c in compared if c.ratio > GOAL_RATIO]
        listed = ", ".join(f"{c.case.label} batch {c.batch:,} {c.backend} {c.ratio:.2f}"
                           for c in over)
        verdict = (f"met in all {len(compared)} cells" if not over else
                   f"not met in {len(over)} of {len(compared)} cells ({listed})")
        print(f"- dlref / bare on the same backend at most {GOAL_RATIO:.2f}: {verdict}; worst "
              f"{max(c.ratio for c in compared):.2f}.")


# --- The other sections ----------------------------------------------------------------------


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


def overhead(cells, folder, epochs, quick):
    """The multiclass rows of the per-recipe section at the book's batch on its declared
    backend, and bare Keras once more at dlref's validation batch (1,024): what dlref's
    callbacks cost by themselves. None when that cell was not measured."""
    cell = next((c for c in cells if c.case.label == "multiclass" and c.batch != BIG_BATCH
                 and c.is_declared and c.dlref and c.bare), None)
    if cell is None:
        return None
    args = [*case_args(cell.case, folder, quick), "--set", f"batch_size={cell.batch}"]
    validation = max(cell.batch, 1024)  # dlref.training.eval_batch_size
    same = None
    for _ in range(cell.runs):  # As many runs as the cell's, the fastest kept.
        try:
            found = bare_cell(args, cell.backend, cell.case.epochs(epochs, cell.backend),
                              validation)
        except CellFailed as error:
            return {"cell": cell, "same": {"error": str(error)}, "validation": validation}
        if same is None or found["epoch"] < same["epoch"]:
            same = found
    return {"cell": cell, "same": same, "validation": validation}


def print_overhead(found, rows):
    cell, same = found["cell"], found["same"]
    dlref, bare = cell.dlref, cell.bare
    print(f"| train multiclass, {rows:,} x 784 ({dlref['rows']:,} train rows), batch "
          f"{cell.batch}, {cell.backend}, s/epoch, dlref, all callbacks | {dlref['epoch']:.2f} s |")
    print(f"| same model, data and batch, bare Keras `fit` | {bare['epoch']:.2f} s |")
    print(f"| overhead ratio dlref / bare (goal < {GOAL_RATIO:.2f}) | {cell.ratio:.3f} |")
    if "error" in same:
        print(f"| bare Keras with dlref's validation batch | failed: {same['error']} |")
    else:
        print(f"| bare Keras with dlref's validation batch ({found['validation']:,}) | "
              f"{same['epoch']:.2f} s |")
        print(f"| callbacks alone: dlref / bare at the same validation batch | "
              f"{dlref['epoch'] / same['epoch']:.3f} |")


def dqn_cartpole(target, *settings, seed=0, interval=2500):
    """`dlref train dqn` (CartPole-v1) until the mean of 20 test episodes, run every `interval`
    steps, reaches `target`, or the 50,000 steps of the book (or its --set steps=N): the first
    step it reached 195 and 475 at, wall time from the command's start, and training steps/s
    (tests left out)."""
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


def print_dqn(quick):
    """The book's settings and the best found, to 475 (quick: at most 5,000 steps each)."""
    cap = ("steps=5000",) if quick else ()
    for what, settings in (("the book's settings", cap),
                           ("best found (" + ", ".join(BEST_DQN) + ")", (*BEST_DQN, *cap))):
        found = dqn_cartpole(475, *[part for setting in settings for part in ("--set", setting)])
        reached = "; ".join(f"{goal} at step {step:,}" if step else f"{goal} not reached"
                            for goal, step in found["reached"].items())
        print(f"| train dqn, CartPole-v1, {what}: mean of 20 test episodes | {reached} "
              f"({found['steps']:,} steps, {found['minutes']:.1f} min, "
              f"{found['steps_per_second']:,.0f} steps/s) |")


def tuning():
    try:
        from dlref.tuning import benchmark
    except ImportError:
        return None
    return benchmark()


def _names(text, known, what):
    """A comma-separated option as a list, every name checked against `known`."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        raise SystemExit(f"Unknown {what}: {', '.join(unknown)}. Known: {', '.join(known)}.")
    return names


def main():
    if sys.argv[1:2] == ["--bare"]:
        return bare_keras(bare_parser().parse_args(sys.argv[2:]))
    if sys.argv[1:2] == ["--peak"]:
        return matmul_peak(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="6,000-row tables, 2 epochs, a smaller image folder, DQN capped "
                             "at 5,000 steps")
    parser.add_argument("--recipes", default="",
                        help="comma-separated rows of the per-recipe section (default: all)")
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, of {', '.join(SECTIONS)}")
    parser.add_argument("--pairs", type=int, default=0,
                        help="runs of dlref and of bare Keras per recipe cell, in turn, the "
                             f"fastest kept (default: {SHORT_PAIRS} where epochs are short, "
                             "else 1; --quick: 1)")
    parser.add_argument("--batches", default=",".join(BATCH_COLUMNS),
                        help="comma-separated batch columns of the per-recipe section: "
                             f"default (each recipe's own) and {BIG_BATCH}")
    args = parser.parse_args()
    if args.pairs < 0:
        parser.error("--pairs must be 0 (the default per case) or more")
    all_cases = cases(args.quick)
    labels = [case.label for case in all_cases]
    known = labels + sorted({name for case in all_cases for name in (case.name, case.recipe)}
                            - set(labels))
    wanted = _names(args.recipes, known, "recipes")
    backends = _names(args.backends, BACKENDS, "backends")
    sections = _names(args.sections, SECTIONS, "sections")
    columns = _names(args.batches, BATCH_COLUMNS, "batches")
    epochs = 2 if args.quick else EPOCHS
    rows = table_rows(args.quick)
    if "overhead" in sections and "recipes" not in sections:
        sections.append("recipes")  # The overhead rows use the multiclass cells.
        wanted = wanted and [*wanted, "multiclass"]
    with tempfile.TemporaryDirectory(prefix="dlref-bench-") as folder:
        start = cli_start() if "start" in sections else {}
        cells = peaks = infos = found = None
        if "recipes" in sections:
            selected = [case for case in all_cases if case.selected(wanted)]
            cells, peaks, infos = recipe_section(selected, backends, epochs, args.quick, folder,
                                                 args.pairs or int(args.quick), columns)
        if "overhead" in sections:
            found = overhead(cells, folder, epochs, args.quick)
    print(f"\n## dlref benchmark ({os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}"
          f"{', quick run' if args.quick else ''})\n")
    if cells is not None:
        print_recipe_table(cells, peaks, infos, epochs)
    print("\n| measure | value |\n|---|---|")
    for command, seconds in start.items():
        print(f"| start: `{command}` | {seconds:.2f} s |")
    if found:
        print_overhead(found, rows)
    elif "overhead" in sections:
        print("| train multiclass, dlref / bare | not measured: it needs multiclass on its "
              "declared backend at the book's batch |")
    sys.stdout.flush()
    if "dqn" in sections:
        print_dqn(args.quick)
    if "tune" in sections:
        for name, value in (tuning() or {}).items():
            print(f"| tune: {name} | {value} |")


if __name__ == "__main__":
    sys.exit(main())
