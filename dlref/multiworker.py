"""Training on several processes or machines: `--strategy multi-worker`.

Data-parallel training with TensorFlow's MultiWorkerMirroredStrategy (MWMS), configured by the
standard TF_CONFIG variable. Every process loads the same data, builds the same model (MWMS
broadcasts the first worker's initial weights) and trains on its share of each global batch;
gradients are summed over gRPC with ring all-reduce, which works on CPU.

Why TensorFlow's engine, and not Keras' JAX distribution API: JAX across processes on CPU needs
its own collectives set up (jax.distributed.initialize and a CPU collectives backend) and each
process to feed only its own shard of the input, while MWMS shards an in-memory dataset itself,
runs over plain gRPC on CPU, and is the book's engine. So a multi-worker run is a TensorFlow
run (backend.for_strategy).

Who writes: the chief (task type "chief", or worker 0 when TF_CONFIG lists no chief, as
TensorFlow decides) writes the run folder. The other workers run the same callbacks into a
scratch folder that is deleted at the end (the callbacks stay identical on every worker, so any
collective step inside them runs everywhere), write nothing under the runs root, and end after
training. The chief then evaluates and saves from last.keras loaded without the strategy, so
that nothing after training needs the workers.

Keras 3.15 does not run MWMS with more than one worker as released (keras-team/keras#20585):
`fit` reduces the whole (x, y) batch structure at once when it builds the model, and reduces
scalar metrics along axis 0. `patch_keras` fixes the two, for multi-worker strategies only.
"""

import json
import os
import re
from dataclasses import dataclass

from dlref.errors import DlrefError

COLLECTIVE_SECONDS = 600  # Longest wait in one all-reduce: a lost peer fails the run, no hang.
EXAMPLE = ('TF_CONFIG=\'{"cluster": {"worker": ["10.0.0.1:12345", "10.0.0.2:12345"]}, '
           '"task": {"type": "worker", "index": 0}}\'')
_ADDRESS = re.compile(r"[^\s:/]+:\d{1,5}")
_STRATEGY = None  # The process' one MWMS: TensorFlow allows one per process.


@dataclass(frozen=True)
class Cluster:
    """This process' place in TF_CONFIG's cluster."""

    task_type: str
    task_index: int
    workers: int  # Training processes in all: the chief and the workers.
    chief: bool  # Writes the run folder.

    def describe(self):
        return f"{self.task_type} {self.task_index} of {self.workers} training processes"


def read_cluster(environ=None):
    """Parses TF_CONFIG; a DlrefError says what is wrong with it, before anything starts."""
    raw = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not raw:
        raise DlrefError("--strategy multi-worker needs TF_CONFIG: the same cluster on every "
                         "machine and this machine's task, e.g. " + EXAMPLE + " on the first "
                         "machine and index 1 on the second.")
    try:
        document = json.loads(raw)
    except ValueError as error:
        raise DlrefError(f"TF_CONFIG is not valid JSON ({error}). Expected e.g. {EXAMPLE}"
                         ) from None
    if not isinstance(document, dict) or not isinstance(document.get("cluster"), dict):
        raise DlrefError(f"TF_CONFIG has no \"cluster\" table. Expected e.g. {EXAMPLE}")
    cluster = document["cluster"]
    other = sorted(set(cluster) - {"chief", "worker"})
    if other:
        raise DlrefError(f"TF_CONFIG's cluster lists {', '.join(other)}: multi-worker training "
                         "uses only \"chief\" (at most one) and \"worker\" tasks.")
    for kind, addresses in cluster.items():
        if not (isinstance(addresses, list) and addresses
                and all(isinstance(a, str) and _ADDRESS.fullmatch(a) for a in addresses)):
            raise DlrefError(f"TF_CONFIG's cluster[{kind!r}] must be a list of \"host:port\" "
                             f"strings, got {addresses!r}.")
    if len(cluster.get("chief", [])) > 1:
        raise DlrefError("TF_CONFIG's cluster lists more than one chief; list one, or none "
                         "(then worker 0 is the chief).")
    return _task(document.get("task"), cluster)


def _task(task, cluster):
    if not isinstance(task, dict) or task.get("type") not in ("chief", "worker"):
        raise DlrefError(f"TF_CONFIG's \"task\" must say which task this process is, e.g. "
                         f"{{\"type\": \"worker\", \"index\": 0}}; got {task!r}.")
    kind, index = task["type"], task.get("index", 0)
    listed = cluster.get(kind, [])
    if not isinstance(index, int) or not 0 <= index < len(listed):
        raise DlrefError(f"TF_CONFIG's task is {kind} {index!r}, but the cluster lists "
                         f"{len(listed)} {kind} task(s) (index 0 to {len(listed) - 1}).")
    workers = len(cluster.get("worker", [])) + len(cluster.get("chief", []))
    chief = kind == "chief" or ("chief" not in cluster and index == 0)
    return Cluster(kind, index, workers, chief)


def strategy():
    """The process' MultiWorkerMirroredStrategy, created on the first call, which waits until
    every process of the cluster has started.

    That wait has no bound: TensorFlow 2.21's start-up barrier ignores its timeout while a peer's
    server does not exist yet, and holds the GIL, so no Python timer can end it (measured here);
    Ctrl-C does not either, kill does. Once all have joined, COLLECTIVE_SECONDS and MWMS's health
    checks end a run whose peer is lost. TensorFlow needs the strategy created before the process
    runs any other TensorFlow operation.
    """
    global _STRATEGY
    if _STRATEGY is not None:
        return _STRATEGY
    from dlref.backend import import_tensorflow

    tf = import_tensorflow()
    patch_keras()
    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=COLLECTIVE_SECONDS,
        implementation=tf.distribute.experimental.CommunicationImplementation.RING)
    try:
        _STRATEGY = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except (tf.errors.OpError, ValueError) as error:  # A port in use, a host that is not this.
        raise DlrefError(f"Cannot start this process' multi-worker server: {error}. Check "
                         "that TF_CONFIG lists this machine's address and a free port.") from None
    return _STRATEGY


def lost_peer(error):
    """A DlrefError for a collective that failed because another process stopped, else None."""
    import tensorflow as tf

    if isinstance(error, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                          tf.errors.CancelledError, tf.errors.AbortedError)):
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return DlrefError(f"Training stopped: another process of the cluster stopped or cannot "
                          f"be reached ({first[:200]}). Start the command again on every machine.")
    return None


def check_resume(run_dir):
    """A multi-worker run is continued by one process alone (see resume)."""
    if os.environ.get("TF_CONFIG", "").strip():
        raise DlrefError(f"{run_dir.name} was trained by several processes; --resume continues "
                         "it in one process, on the machine that holds the run folder. Run it "
                         "there without TF_CONFIG: env -u TF_CONFIG dlref train --resume "
                         f"{run_dir}")


def patch_keras():
    """Fixes Keras 3.15's multi-worker reductions (keras-team/keras#20585) for MWMS only."""
    from keras.src.backend.tensorflow import trainer

    if getattr(trainer.reduce_per_replica, "dlref_patched", False):
        return
    reduce_per_replica = trainer.reduce_per_replica
    symbolic_build = trainer.TensorFlowTrainer._maybe_symbolic_build

    def reduce_multi_worker(values, strategy, reduction):
        # Keras reduces each metric along axis 0, which a scalar does not have.
        if reduction in ("auto", "mean", "sum") and trainer._collective_all_reduce_multi_worker(
                strategy):
            operation = "SUM" if reduction == "sum" else "MEAN"
            return trainer.tree.map_structure(
                lambda value: strategy.reduce(operation, value, axis=None), values)
        return reduce_per_replica(values, strategy, reduction)

    def build_multi_worker(self, iterator=None, data_batch=None):
        # Keras reduces the whole (x, y) structure across workers to learn its shapes, which
        # MWMS refuses; this process' own first batch has the same shapes.
        strategy = self._distribute_strategy
        if iterator is None or strategy is None or not (
                trainer._collective_all_reduce_multi_worker(strategy)):
            return symbolic_build(self, iterator, data_batch)
        for _, _, batches in iterator:
            data_batch = trainer.tree.map_structure(
                lambda value: strategy.experimental_local_results(value)[0], next(batches))
            break
        with strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    reduce_multi_worker.dlref_patched = True
    trainer.reduce_per_replica = reduce_multi_worker
    trainer.TensorFlowTrainer._maybe_symbolic_build = build_multi_worker
