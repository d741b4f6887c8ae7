"""Imports TensorFlow once, quietly.

TensorFlow 2.21 writes oneDNN and CUDA notices to stderr while it loads, before its own log
level applies (TF_CPP_MIN_LOG_LEVEL hides some, not all). Users should not see them on every
command, so fd 2 points at /dev/null for the import alone; errors raised by the import still
reach the user as Python exceptions, and everything after it prints as usual.
"""

import contextlib
import os
import sys


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


STRATEGIES = ("default", "mirrored")


def distribution_strategy(name):
    """The tf.distribute strategy whose scope the model is built in (--strategy).

    `mirrored` replicates the model on every local GPU (or the CPU when there is none) and
    splits each batch between them; `default` is TensorFlow's single-device strategy.
    """
    tensorflow = import_tensorflow()
    if name == "mirrored":
        return tensorflow.distribute.MirroredStrategy()
    return tensorflow.distribute.get_strategy()
