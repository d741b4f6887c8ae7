"""The Keras backend of a command, and TensorFlow imported once, quietly.

Keras 3 runs the same model code on TensorFlow or JAX, and reads KERAS_BACKEND once, when it is
first imported: `use` sets it before that (registry.load is where a recipe's Keras is
imported). The backend is `--backend` when given, else the run's own (resume, evaluate,
predict), else the user's KERAS_BACKEND, else the recipe's BACKEND.

TensorFlow 2.21 writes oneDNN and CUDA notices to stderr while it loads, before its own log
level applies (TF_CPP_MIN_LOG_LEVEL hides some, not all). Users should not see them on every
command, so fd 2 points at /dev/null for the import alone; errors raised by the import still
reach the user as Python exceptions, and everything after it prints as usual.
"""

import contextlib
import importlib.util
import os
import sys

from dlref.errors import DlrefError

BACKENDS = ("tensorflow", "jax")
REQUESTED = None  # The current command's --backend, or None.


def request(name):
    """Records the command's --backend (None: not given)."""
    global REQUESTED
    if name is not None and name not in BACKENDS:
        raise DlrefError(f"Unknown --backend {name!r}. Known: {', '.join(BACKENDS)}.")
    REQUESTED = name


def use(default, recorded=None, supported=BACKENDS, recipe="this recipe"):
    """Sets KERAS_BACKEND before Keras is imported; returns the backend's name.

    Args:
        default: the recipe's BACKEND.
        recorded: the backend a run was trained on (resume, evaluate, predict), or None.
        supported: the recipe's BACKENDS. A KERAS_BACKEND outside them gives way to the
            recipe's own backend, with a note; an explicit --backend is refused.
    """
    environment = os.environ.get("KERAS_BACKEND")
    name = REQUESTED or recorded or environment or default
    if name not in BACKENDS:
        raise DlrefError(f"Unknown Keras backend {name!r} (from KERAS_BACKEND). Known: "
                         f"{', '.join(BACKENDS)}.")
    if name not in supported:
        if REQUESTED or recorded:
            raise DlrefError(f"The {recipe} recipe runs on {' or '.join(supported)} only; "
                             f"leave out --backend {name}.")
        print(f"Note: KERAS_BACKEND is {name}, but the {recipe} recipe runs on "
              f"{' or '.join(supported)} only; using {default}.", file=sys.stderr, flush=True)
        name = default
    loaded = current()
    if loaded is not None:
        if loaded != name:
            raise DlrefError(f"Keras is already loaded with the {loaded} backend in this "
                             f"process, so it cannot run on {name}: start a new process (the "
                             "dlref command) for it.")
        return name
    if name == "jax" and importlib.util.find_spec("jax") is None:
        raise DlrefError("The jax backend needs JAX, which is not installed: pip install "
                         "'jax[cpu]' (make install does), or --backend tensorflow (a saved "
                         "model loads on either).")
    os.environ["KERAS_BACKEND"] = name
    return name


def current():
    """The backend of the Keras loaded in this process, or None before Keras is imported."""
    keras = sys.modules.get("keras")
    backend = getattr(keras, "backend", None)
    return backend.backend() if backend is not None else None


@contextlib.contextmanager
def quiet_stderr():
    """fd 2 points at /dev/null inside the block: for notices that C++ code writes (TensorFlow's
    while it loads, the Atari emulator's banner), which Python cannot filter."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "tensorflow" in sys.modules or os.environ.get("DLREF_TF_VERBOSE"):
        import tensorflow

        return tensorflow
    with quiet_stderr():
        import tensorflow
    # TensorFlow's Python logger warns about tf.function retracing when one process builds
    # many models (tuning, then --train-best): advice for library authors, not for our users.
    tensorflow.get_logger().setLevel("ERROR")
    return tensorflow


STRATEGIES = ("default", "mirrored", "multi-worker")


def for_strategy(strategy):
    """Picks TensorFlow for a tf.distribute --strategy (mirrored, multi-worker), before Keras is
    imported: those strategies are TensorFlow's engine (dlref.multiworker says why not JAX's).
    An explicit --backend jax is refused; a KERAS_BACKEND or a recipe default of jax gives way."""
    if strategy not in ("mirrored", "multi-worker"):
        return
    if REQUESTED == "jax":
        raise DlrefError(f"--strategy {strategy} trains with TensorFlow's tf.distribute, so it "
                         "cannot run on --backend jax: leave out --backend, or give --backend "
                         "tensorflow.")
    if os.environ.get("KERAS_BACKEND") == "jax":
        print(f"Note: KERAS_BACKEND is jax, but --strategy {strategy} runs on TensorFlow; using "
              "tensorflow.", file=sys.stderr, flush=True)
    request("tensorflow")


def distribution_strategy(name):
    """The tf.distribute strategy whose scope the model is built in (--strategy).

    `mirrored` replicates the model on every local GPU (or the CPU when there is none) and
    splits each batch between them; `multi-worker` does the same across the processes that
    TF_CONFIG lists (dlref.multiworker); `default` is TensorFlow's single-device strategy.
    """
    tensorflow = import_tensorflow()
    if name == "multi-worker":
        from dlref import multiworker

        return multiworker.strategy()
    if name == "mirrored":  # On TensorFlow: for_strategy chose it before Keras loaded.
        return tensorflow.distribute.MirroredStrategy()
    return tensorflow.distribute.get_strategy()
