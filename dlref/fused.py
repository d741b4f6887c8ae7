"""Fused training steps on JAX: several batches per compiled call.

At the book's batch of 32 a step of the multiclass network is a fraction of a millisecond of
arithmetic, and Keras spends about as long again in Python between steps (on JAX, each batch is
one call of the compiled step, then the callbacks' batch hooks). Keras' `steps_per_execution`
does not help on JAX: it calls the compiled step K times from Python. Here one compiled
`jax.lax.scan` runs K steps of the model's own `train_step` over K stacked batches, so Python
is entered once per K batches. Measured here on the multiclass network at batch 32 (2 cores,
60,000 rows, three pairs of runs, Keras' `fit` against a scan of 8 or 32 steps of the same
model): 15.4k-24.9k against 25.5k-31.7k samples/s.

Only batches under MAX_BATCH_BYTES fuse, and only in recipes that declare `FUSED_STEPS = True`
(the dense ones): convolutions inside the scan ran 2.6x slower than step by step on JAX here
(the cnn recipe, 12.4 against 4.7 s an epoch), and seq2seq's LSTM steps are long enough that
fusing changed nothing (1.3-1.5 s an epoch either way).

The steps are the same steps in the same order (the dropout seeds travel in the state the scan
carries), so a run trains as it would without fusing, up to floating-point rounding. Keras
groups the batches (`steps_per_execution`), so callbacks' batch hooks run once per group; no
dlref callback needs more (NaN checks see each group's mean loss). TensorFlow is left as it
is: its `steps_per_execution` would run past the end of an epoch into dlref's next one (the
batches run on across epochs), and the dense recipes train on JAX.
"""

import contextlib

from dlref import backend

# Batches per call. Multiclass at batch 32, one run each: 25.5k samples/s with 8, 30.6k and
# 31.7k with 32, 36.3k with 128 (runs apart, on a noisy machine); 32 keeps the copy small.
MAX_STEPS = 32
# Only batches under this fuse. The regression network on 42,000 x 784 rows on JAX, in one
# process, fused and step by step in turn (s an epoch): at batch 128 0.095-0.116 against
# 0.129-0.172, at 256 0.081-0.120 against 0.107-0.138, at 512 (1.6 MB a batch) 0.090-0.141
# against 0.087-0.119, at 1,024 0.077-0.117 against 0.078-0.092 (bare Keras 0.073-0.092).
MAX_BATCH_BYTES = 2**20


def group_size(train, batch_size, steps_per_epoch):
    """Batches per compiled call for training arrays `train` at `batch_size`: MAX_STEPS, never
    more than an epoch's batches, and 1 (no fusing) for batches of MAX_BATCH_BYTES or more,
    whose steps are long enough that the scan slows them."""
    import keras
    import numpy as np

    leaves = [np.asarray(leaf) for leaf in keras.tree.flatten(train) if leaf is not None]
    rows = max(len(leaves[0]), 1) if leaves else 1
    batch_bytes = max(sum(leaf.nbytes for leaf in leaves) / rows * batch_size, 1)
    return int(max(1, min(MAX_STEPS, steps_per_epoch))) if batch_bytes < MAX_BATCH_BYTES else 1


@contextlib.contextmanager
def fused_steps(model, steps, steps_per_epoch):
    """Within the block, `model.fit` on JAX trains `steps` batches per compiled call (see the
    module's docstring). Does nothing where fusing cannot apply: TensorFlow, fewer than 2
    steps, a model run eagerly or without jit, or a JAX distribution."""
    if not _applies(model, steps):
        yield
        return
    previous = model.steps_per_execution
    # Keras makes each of these once and keeps it; made under another grouping they would
    # read the wrong number of batches per call.
    _forget_functions(model)
    model.steps_per_execution = steps
    model.train_function = _FusedTrainFunction(model, steps, steps_per_epoch)
    try:
        yield
    finally:
        model.steps_per_execution = previous
        _forget_functions(model)


def _applies(model, steps):
    if backend.current() != "jax" or steps < 2:
        return False
    from keras.src.distribution import distribution_lib

    return (not model.run_eagerly and bool(model.jit_compile)
            and distribution_lib.distribution() is None)


def _forget_functions(model):
    model.train_function = model.test_function = model.predict_function = None


class _FusedTrainFunction:
    """Keras' train function on JAX, (state, iterator) -> (logs, state), taking up to `steps`
    batches per call and never more than are left in the epoch (dlref's batches run on from
    one epoch into the next). A full group of batches of one shape runs as one scan; a short
    group (an epoch's last) runs step by step."""

    def __init__(self, model, steps, steps_per_epoch):
        import jax

        self.steps, self.steps_per_epoch, self.done = steps, steps_per_epoch, 0

        def scanned(state, batches):
            def one(state, batch):
                logs, state = model.train_step(state, batch)
                return state, logs

            state, logs = jax.lax.scan(one, state, batches)
            return jax.tree.map(lambda values: values[-1], logs), state

        self.scanned = jax.jit(scanned, donate_argnums=0)
        self.single = jax.jit(model.train_step, donate_argnums=0)

    def __call__(self, state, iterator):
        import jax
        import numpy as np

        wanted = min(self.steps, self.steps_per_epoch - self.done)
        batches = []
        for _ in range(wanted):
            try:
                batches.append(next(iterator))
            except StopIteration:
                if not batches:
                    raise
                break
        self.done = (self.done + len(batches)) % self.steps_per_epoch
        shapes = {tuple(np.shape(leaf) for leaf in jax.tree.leaves(batch)) for batch in batches}
        if len(batches) == self.steps and len(shapes) == 1:
            stacked = jax.tree.map(lambda *leaves: stacked_parts(leaves), *batches)
            return self.scanned(state, stacked)
        for batch in batches:
            logs, state = self.single(state, batch)
        return logs, state


def stacked_parts(arrays):
    """np.stack(arrays), without a copy where they are consecutive equal parts of one array, in
    order: dlref.training gathers a group's batches so. Stacking them copied the whole table
    each epoch: 13-22 ms here for 42,000 rows of 784 float32."""
    import numpy as np

    first = arrays[0]
    owner = getattr(first, "base", None)
    if owner is None or not all(
            isinstance(array, np.ndarray) and array.base is owner and array.flags.c_contiguous
            and array.shape == first.shape and array.dtype == first.dtype for array in arrays):
        return np.stack(arrays)
    start = first.__array_interface__["data"][0]
    if any(array.__array_interface__["data"][0] != start + index * first.nbytes
           for index, array in enumerate(arrays)):
        return np.stack(arrays)
    # Each part starts where the one before it ends, in memory their common owner holds.
    return np.lib.stride_tricks.as_strided(first, (len(arrays), *first.shape),
                                           (first.nbytes, *first.strides), writeable=False)
