"""keras-rl2 1.0.5 on TensorFlow 2.21 and numpy 2: the environment and the patches it needs.

Import this module before anything imports TensorFlow, and only in the worker process: it
switches `tensorflow.keras` to legacy Keras (tf-keras) for the whole process, and importing
`rl.agents` turns eager execution off. Each patch below is what keeps keras-rl2 working here;
each says what breaks without it.
"""

import os
import sys
import types

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise RuntimeError("dlref.rl.legacy must be imported before TensorFlow (it selects legacy "
                       "Keras), in the keras-rl2 worker process only.")
os.environ["TF_USE_LEGACY_KERAS"] = "1"  # tensorflow.keras is then tf-keras 2.x.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import importlib  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

# keras-rl2 imports __version__ from tensorflow.keras, which resolves to tf-keras' API module
# (tf_keras/api/_v2/keras), and that module has none.
importlib.import_module("tensorflow.keras").__version__ = tf_keras.__version__

import rl.core  # noqa: E402
import rl.util  # noqa: E402

# numpy 2 keeps np.int16 arithmetic in int16, so the step and episode counters that
# Agent.fit starts as np.int16(0) wrap to -32768 after 32,767 steps: `while step < nb_steps`
# never ends and epsilon annealing runs backwards. rl.core alone sees a numpy whose int16 is
# Python's int (unbounded); everything else in it is numpy's own.
_numpy_without_int16 = types.ModuleType("numpy")
_numpy_without_int16.__dict__.update(np.__dict__)
_numpy_without_int16.int16 = int
rl.core.np = _numpy_without_int16


def _get_updates(self, params, loss):
    """The target network's soft update is computed from the online weights before the
    gradient step changes them. Unpatched, graph mode leaves that order to chance, and two
    runs with the same seed gave different rewards."""
    with tf.control_dependencies([new for _, new in self.additional_updates]):
        updates = self.optimizer.get_updates(params=params, loss=loss)
    self.updates = list(updates) + list(self.additional_updates)
    return self.updates


rl.util.AdditionalUpdatesOptimizer.get_updates = _get_updates

keras = tf_keras


def adam(learning_rate):
    """keras-rl2 calls `get_updates`, which only the legacy optimizers have."""
    return tf_keras.optimizers.legacy.Adam(learning_rate=learning_rate)


def trusted_cloning():
    """keras-rl2 makes its target network by rebuilding the Q-network from its config. With
    dueling on, that config holds the Lambda layer keras-rl2 itself added, which tf-keras's safe
    mode refuses to rebuild. The config never leaves memory (no file is loaded), so the rebuild
    runs outside safe mode."""
    from tf_keras.src.saving.serialization_lib import SafeModeScope

    return SafeModeScope(safe_mode=False)


def seed_everything(seed):
    """Python's, numpy's (replay sampling, epsilon-greedy) and TensorFlow's graph-level seed
    (initial weights)."""
    import random

    random.seed(seed)
    np.random.seed(seed)
    tf.compat.v1.set_random_seed(seed)
