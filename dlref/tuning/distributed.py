"""Distributed tuning on keras-tuner's chief / worker engine (DESIGN.md section 8).

The chief holds the oracle and serves it over gRPC; workers ask it for trials, train them and
report back. keras-tuner picks its role from KERASTUNER_TUNER_ID / KERASTUNER_ORACLE_IP /
KERASTUNER_ORACLE_PORT, which `environment` sets from --role, --oracle and --worker-id (and
restores afterwards, so an in-process caller keeps its own environment).

The oracle has no authentication: it binds to a loopback address unless --allow-remote.
"""

import contextlib
import dataclasses
import ipaddress
import os
import re
import socket
import sys
import time
from pathlib import Path

from dlref import runs
from dlref.errors import DlrefError
from dlref.interrupts import Latch

ROLES = ("chief", "worker")
ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")
WORKER_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")


@dataclasses.dataclass(frozen=True)
class Cluster:
    """This process's part in a search.

    Args:
        role: None (one process runs everything), "chief" (serves the oracle) or "worker".
        oracle: HOST:PORT where the chief's oracle listens.
        worker_id: a worker's name, unique in the search; a restarted worker reuses it.
        allow_remote: let the chief bind a non-loopback address.
        connect_timeout: seconds a worker waits for the chief (at start, and per request).
    """

    role: str | None = None
    oracle: str | None = None
    worker_id: str | None = None
    allow_remote: bool = False
    connect_timeout: float = 60.0

    @property
    def host(self):
        return self.oracle.rpartition(":")[0]

    @property
    def port(self):
        return self.oracle.rpartition(":")[2]


def check(cluster):
    """Rejects inconsistent role options; warns when the oracle may face the network."""
    if cluster.role is None:
        if cluster.oracle or cluster.worker_id or cluster.allow_remote:
            raise DlrefError("--oracle, --worker-id and --allow-remote go with --role chief or "
                             "--role worker.")
        return cluster
    if cluster.role not in ROLES:
        raise DlrefError(f"Unknown --role {cluster.role!r}: use chief or worker.")
    if not cluster.oracle:
        raise DlrefError(f"--role {cluster.role} needs --oracle HOST:PORT, e.g. 127.0.0.1:8000.")
    host, _, port = cluster.oracle.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise DlrefError(f"--oracle expects HOST:PORT (e.g. 127.0.0.1:8000): {cluster.oracle!r}.")
    if cluster.role == "worker":
        if not cluster.worker_id or not WORKER_ID.fullmatch(cluster.worker_id) \
                or "chief" in cluster.worker_id:
            raise DlrefError("A worker needs --worker-id NAME: 1-32 characters from A-Z a-z 0-9 _ -"
                             ", unique in the search, not containing 'chief' (e.g. w0).")
        if cluster.allow_remote:
            raise DlrefError("--allow-remote is the chief's option (it decides where to listen).")
        if cluster.connect_timeout <= 0:
            raise DlrefError("--connect-timeout must be a positive number of seconds.")
        return cluster
    if cluster.worker_id:
        raise DlrefError("--worker-id is for workers; the chief is always 'chief'.")
    if not _is_loopback(host) and not cluster.allow_remote:
        raise DlrefError(
            f"The oracle would listen on {host}, reachable from other machines, and it has no "
            "authentication. Use 127.0.0.1, or pass --allow-remote on a network you trust.")
    if cluster.allow_remote:
        print(f"Warning: the oracle on {cluster.oracle} has no authentication: anyone who can "
              "reach it can read this search and send it results.", file=sys.stderr)
    return cluster


def _is_loopback(host):
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port_free(cluster):
    """The chief's port, tried before a run folder exists (gRPC would only fail later)."""
    host = cluster.host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("" if host in ("0.0.0.0", "::") else host, int(cluster.port)))
        except OSError as error:
            raise DlrefError(f"Cannot listen on {cluster.oracle}: {error.strerror}. "
                             "Choose another port (--oracle HOST:PORT).") from None


@contextlib.contextmanager
def environment(cluster):
    """keras-tuner's KERASTUNER_* variables for this role, restored on exit."""
    saved = {name: os.environ.pop(name, None) for name in ENV}
    if cluster.role:
        os.environ.update({
            "KERASTUNER_TUNER_ID": "chief" if cluster.role == "chief" else cluster.worker_id,
            "KERASTUNER_ORACLE_IP": cluster.host,
            "KERASTUNER_ORACLE_PORT": cluster.port,
        })
    try:
        yield
    finally:
        for name, value in saved.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


def serve(tuner, cluster, poll_seconds=0.2, latch=None):
    """The chief: keras-tuner's oracle servicer on --oracle until every worker has stopped.

    keras-tuner's own `start_server` checks whether it may stop every 20 s; this checks often.
    """
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute import oracle_chief

    tuner.save()
    # No SO_REUSEPORT: a second chief on the same port must fail, not share it.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1),
                         options=[("grpc.so_reuseport", 0)])
    servicer = oracle_chief.OracleServicer(tuner.oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    try:
        bound = server.add_insecure_port(cluster.oracle)
    except RuntimeError:
        bound = 0
    if not bound:
        raise DlrefError(f"Cannot listen on {cluster.oracle}: the port is taken or the address "
                         "is not this machine's.")
    server.start()
    print(f"Oracle listening on {cluster.oracle}. Start workers with:\n"
          f"  dlref tune ... --role worker --oracle {cluster.oracle} --worker-id w0", flush=True)
    try:
        while not (servicer.stop_triggered and oracle_chief.exit_chief(tuner.oracle)):
            time.sleep(poll_seconds)
            if latch:
                latch.check()  # A Ctrl-C that a garbage-collection callback dropped.
    finally:
        server.stop(grace=1)


def connect(cluster):
    """Waits up to --connect-timeout for the chief; later requests share that limit."""
    import grpc
    from keras_tuner.src.distribute import oracle_client

    channel = grpc.insecure_channel(cluster.oracle)
    try:
        grpc.channel_ready_future(channel).result(timeout=cluster.connect_timeout)
    except grpc.FutureTimeoutError:
        raise DlrefError(
            f"No chief answered at {cluster.oracle} within {cluster.connect_timeout:g} s. "
            f"Start it first (dlref tune NAME --role chief --oracle {cluster.oracle}), or check "
            "the address, the port and the firewall.") from None
    finally:
        channel.close()
    # keras-tuner waits an hour per request for a chief that went away; a worker gives up sooner.
    oracle_client.TIMEOUT = max(60.0, cluster.connect_timeout)


def find_chief_run(root, recipe, cluster):
    """The chief's run folder when this worker sees it (same machine, or a shared runs dir)."""
    for manifest in reversed(runs.list_runs(root, recipe)):
        if (manifest.get("kind") == "tune" and manifest.get("role") == "chief"
                and manifest.get("status") == "running"
                and str(manifest.get("oracle", "")).rpartition(":")[2] == cluster.port):
            return Path(manifest["path"])
    return None


def work(module, config, data, settings, space, cluster, root, run_name=None):
    """A worker: trains the trials the chief hands out until it says stop.

    Returns the run folder it wrote into, or None when interrupted.
    """
    import grpc

    from dlref.tuning import engine
    from dlref.tuning.plan import space_changes, space_json

    connect(cluster)
    run_dir = find_chief_run(root, module.NAME, cluster)
    own = run_dir is None  # Its own folder (status kept here) rather than the chief's.
    if not own:
        _check_same_search(runs.read_manifest(run_dir), config, data, settings, space)
    else:
        run_dir = runs.create_run(root, module.NAME, run_name or cluster.worker_id, prefix="tune-")
        runs.new_manifest(run_dir, "tune", module.NAME, sys.argv, role="worker",
                          oracle=cluster.oracle, worker_id=cluster.worker_id, search=settings,
                          monitor=settings["objective"], epochs_completed=0)
        print(f"Warning: no chief's run folder under {root}/{module.NAME}, so this worker keeps "
              f"its checkpoints and logs in {run_dir}. Hyperband's later rounds load earlier "
              "trials' checkpoints: give chief and workers one shared --runs-dir (e.g. NFS).",
              file=sys.stderr)
    print(f"Worker {cluster.worker_id} of the search at {cluster.oracle}, writing to {run_dir}.",
          flush=True)
    with environment(cluster):
        tuner = engine.make_tuner(module, config, data, run_dir, settings)
        differences = space_changes(space_json(tuner.oracle.get_space()), space)
        if differences:
            raise DlrefError("This worker's search space differs from the chief's: "
                             + "; ".join(differences) + ". Give it the chief's recipe options.")
        try:
            with Latch() as latch:
                engine.search(tuner, run_dir, settings, latch)
        except grpc.RpcError as error:
            _mark(run_dir, own, "failed")
            raise DlrefError(f"Lost the chief at {cluster.oracle} ({error.code().name}); its "
                             "search can be resumed on the chief with --resume.") from None
        except KeyboardInterrupt:
            print(f"\nWorker {cluster.worker_id} stopped. Restart it with the same --worker-id "
                  "to retry its trial.", file=sys.stderr)
            return _mark(run_dir, own, "interrupted")
    _mark(run_dir, own, "completed")
    ran = ", ".join(trial_id for trial_id, _, _ in tuner.ran) or "none"
    results = "the chief's run folder" if own else run_dir / "trials.csv"
    print(f"Worker {cluster.worker_id} done: trials {ran}. Results: {results}.")
    return run_dir


def _mark(run_dir, own, status):
    if own:
        runs.update_manifest(run_dir, status=status)
    return run_dir if status == "completed" else None


def _check_same_search(chief, config, data, settings, space):
    """A worker must train the chief's search: same data, space, base config and settings."""
    from dlref.tuning.plan import space_changes

    problems = []
    if chief["data"]["fingerprint"] != data.fingerprint:
        problems.append(f"data fingerprint {data.fingerprint}, the chief's "
                        f"{chief['data']['fingerprint']}")
    problems += space_changes(chief["search_space"]["hyperparameters"], space, chief["config"],
                              dataclasses.asdict(config))
    problems += [f"{key} {settings.get(key)}, the chief's {value}"
                 for key, value in chief["search"].items() if settings.get(key) != value]
    if problems:
        raise DlrefError("This worker's search differs from the chief's: " + "; ".join(problems)
                         + ". Start it with the chief's recipe, data and search options.")
