"""Fused training steps on JAX: several batches per compiled call.

At the book's batch of 32 a step of the multiclass network is a fraction of a millisecond of
arithmetic, and Keras spends about as long again in Python between steps (on JAX, each batch is
one call of the compiled step, then the callbacks' batch hooks). Keras' `steps_per_execution`
does not help on JAX: it calls the compiled step K times from Python. Here one compiled
`jax.lax.scan` runs K steps of the model's own `train_step` over K stacked batches, so Python
is entered once per K batches. Measured here on the multiclass network at batch 32 (2 cores,
60,000 rows, three pairs of runs, Keras' `fit` against a scan of 8 or 32 steps of the same
model): 15.4k-24.9k against 25.5k-31.7k samples/s.

Only recipes that declare `FUSED_STEPS = True` fuse (the dense ones): convolutions inside the
scan ran 2.6x slower than step by step on JAX here (the cnn recipe, 12.4 against 4.7 s an
epoch), and seq2seq's LSTM steps are long enough that fusing changed nothing (1.3-1.5 s an
epoch either way).

Where the batches are large (MIN_DEVICE_BATCH_BYTES) and the training table is not
(MAX_DEVICE_BYTES), the table is put on the device once per fit (DeviceRows) and the batches
are row numbers: each compiled call gathers its rows there. Gathering them on the host and
copying them in, 100 MB a call at batch 1,024, cost more than the steps of a narrow network:
the regression network (784-32-1) on 42,000 rows at batch 1,024 in plain JAX here trained
0.27-0.32 M samples/s so, 0.73-0.95 M with its rows gathered on the device. At batch 32 the
gather in each step cost more than the copy it saves. Host batches fuse only under
MAX_BATCH_BYTES.

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
# Batches gathered on the host fuse only under this. The regression network on 42,000 x 784
# rows on JAX, in one process, fused and step by step in turn (s an epoch): at batch 128
# 0.095-0.116 against 0.129-0.172, at 256 0.081-0.120 against 0.107-0.138, at 512 (1.6 MB a
# batch) 0.090-0.141 against 0.087-0.119, at 1,024 0.077-0.117 against 0.078-0.092 (bare
# Keras 0.073-0.092).
MAX_BATCH_BYTES = 2**20
# Batches of at least MIN_DEVICE_BATCH_BYTES from a training table of at most MAX_DEVICE_BYTES
# are gathered on the device (DeviceRows; the table is a second copy in memory on a CPU). The
# regression network in plain JAX here, 42,000 x 784 rows, 32 steps a call, gathered on the
# device in the scan against on the host (s an epoch): at batch 32 (100 KB) 0.124-0.161
# against 0.107-0.121, at 64 0.094 against 0.097-0.105, at 128 0.061 against 0.085-0.107,
# at 512 0.041-0.045 against 0.084-0.092, at 1,024 0.035-0.045 against 0.104-0.120.
MIN_DEVICE_BATCH_BYTES = 2**17
MAX_DEVICE_BYTES = 2**30


def plan(model, train, batch_size, steps_per_epoch):
    """(batches per compiled call, DeviceRows or None) for a fit of `model` on the training
    arrays `train` at `batch_size`: the rows gathered on the device where fusing applies and
    the batches and table are of a size for it, else group_size's grouping of host batches."""
    group = _capped(steps_per_epoch)
    leaves = _leaves(train)
    table, batch = _sizes(leaves, batch_size)
    if (group > 1 and _applies(model, group) and hasattr(model, "_symbolic_build")
            and MIN_DEVICE_BATCH_BYTES <= batch and table <= MAX_DEVICE_BYTES
            and all(leaf.dtype.kind in "biuf" for leaf in leaves)):
        return group, DeviceRows(train)
    return _host_group(group, batch), None


class DeviceRows:
    """A fit's training arrays on the JAX device, put there once. Its batches are the row
    numbers of the rows they hold, `(rows,)` (int32), which _FusedTrainFunction gathers on the
    device; `first` is a batch of real rows, for Keras to build the loss and metrics from."""

    def __init__(self, train):
        import jax
        import keras
        import numpy as np

        structure = tuple(train)
        self.arrays = jax.device_put(keras.tree.map_structure(np.asarray, structure))
        self.first = keras.tree.map_structure(lambda leaf: np.asarray(leaf)[:1], structure)

    def batches(self, orders, batch_size):
        """(row numbers,) of each batch of each epoch's order of rows."""
        import numpy as np

        for order in orders:
            order = order.astype(np.int32)
            for start in range(0, len(order), batch_size):
                yield (order[start:start + batch_size],)


def _gather(arrays, rows):
    """The batch of `arrays` at row numbers `rows`, on the device (inside a compiled step)."""
    import jax
    import jax.numpy as jnp

    # The row numbers are in range: "clip" spares the bounds mask of the default mode.
    return jax.tree.map(lambda array: jnp.take(array, rows, axis=0, mode="clip"), arrays)


def _leaves(train):
    import keras
    import numpy as np

    return [np.asarray(leaf) for leaf in keras.tree.flatten(train) if leaf is not None]


def group_size(train, batch_size, steps_per_epoch):
    """Batches per compiled call for training arrays `train` at `batch_size` gathered on the
    host: MAX_STEPS, never more than an epoch's batches, and 1 (no fusing) for batches of
    MAX_BATCH_BYTES or more, whose copies cost more than fusing saves."""
    return _host_group(_capped(steps_per_epoch), _sizes(_leaves(train), batch_size)[1])


def _host_group(group, batch_bytes):
    """`group` host batches per call, or 1 for batches of MAX_BATCH_BYTES or more."""
    return group if batch_bytes < MAX_BATCH_BYTES else 1


def _capped(steps_per_epoch):
    """MAX_STEPS, never more than an epoch's batches, at least 1."""
    return int(max(1, min(MAX_STEPS, steps_per_epoch)))


def _sizes(leaves, batch_size):
    """(bytes of the training arrays `leaves`, bytes of a batch of them)."""
    table = sum(leaf.nbytes for leaf in leaves)
    rows = max(len(leaves[0]), 1) if leaves else 1
    return table, max(table / rows * batch_size, 1)


@contextlib.contextmanager
def fused_steps(model, steps, steps_per_epoch, rows=None):
    """Within the block, `model.fit` on JAX trains `steps` batches per compiled call (see the
    module's docstring); with `rows` (DeviceRows), its batches are row numbers of those arrays.
    Does nothing where fusing cannot apply: TensorFlow, fewer than 2 steps, a model run
    eagerly or without jit, or a JAX distribution (`plan` gives no rows then)."""
    if not _applies(model, steps):
        yield
        return
    previous = model.steps_per_execution
    # Keras makes each of these once and keeps it; made under another grouping they would
    # read the wrong number of batches per call.
    _forget_functions(model)
    if rows is not None:
        # Keras builds the loss and metrics from the first batch `fit` is given, which is row
        # numbers here: they are built from real rows first.
        model._symbolic_build(data_batch=rows.first)
    model.steps_per_execution = steps
    model.train_function = _FusedTrainFunction(model, steps, steps_per_epoch, rows)
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
    group (an epoch's last) runs step by step. With `rows` (DeviceRows), each batch is `(row
    numbers,)` and its rows are gathered from the arrays on the device inside the step."""

    def __init__(self, model, steps, steps_per_epoch, rows=None):
        import jax

        self.steps, self.steps_per_epoch, self.done = steps, steps_per_epoch, 0
        self.arrays = rows.arrays if rows is not None else None

        def step(state, batch, arrays):
            if arrays is not None:
                batch = _gather(arrays, batch[0])
            return model.train_step(state, batch)

        def scanned(state, batches, arrays):
            def one(state, batch):
                logs, state = step(state, batch, arrays)
                return state, logs

            state, logs = jax.lax.scan(one, state, batches)
            return jax.tree.map(lambda values: values[-1], logs), state

        self.scanned = jax.jit(scanned, donate_argnums=0)
        self.single = jax.jit(step, donate_argnums=0)

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
            return self.scanned(state, stacked, self.arrays)
        for batch in batches:
            logs, state = self.single(state, batch, self.arrays)
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
