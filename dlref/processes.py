"""Child processes that never outlive dlref (the TensorBoard server; the keras-rl2 worker).

A child runs in its own session, so a Ctrl-C in the terminal reaches dlref alone, and dlref
stops it on SIGINT, SIGTERM and SIGHUP: SIGTERM to its process group, SIGKILL if it is still
there after 10 s. On Linux the kernel also sends the child SIGTERM when dlref dies without that
chance (kill -9), through prctl(PR_SET_DEATHSIG).
"""

import os
import signal
import subprocess
import sys

STOP_SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None))
                     if s)
PR_SET_DEATHSIG = 1


class _Stop(Exception):
    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def run_child(command, grace_seconds=10):
    """Runs `command` to its end; returns its exit code, 0 when Ctrl-C stopped it, or 128 + N
    when signal N did (to dlref or to the child)."""
    def stop(signum, frame):
        raise _Stop(signum)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    child = None
    try:
        child = subprocess.Popen(command, start_new_session=True, preexec_fn=death_signal())
        code = child.wait()
        return code if code >= 0 else 128 - code
    except _Stop as stopped:
        return 0 if stopped.signum == signal.SIGINT else 128 + stopped.signum
    finally:
        if child is not None and child.poll() is None:
            _stop_group(child, grace_seconds)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _stop_group(child, grace_seconds):
    try:
        os.killpg(child.pid, signal.SIGTERM)
        child.wait(timeout=grace_seconds)
    except (subprocess.TimeoutExpired, _Stop):  # Slow to stop, or a second signal.
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


def death_signal():
    """A preexec_fn asking Linux to SIGTERM the child when dlref dies; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def ask():  # In the child, between fork and exec.
        libc.prctl(PR_SET_DEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # dlref died before the line above took effect.
            os._exit(1)

    return ask
