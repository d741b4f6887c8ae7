"""Ctrl-C and SIGTERM for the whole of a run: training, evaluation and saving.

The first signal is a request: training stops at the end of the current epoch, and once
training is over, the evaluation and saving run to their end, so the run folder is complete.
A second signal stops at once: `on_second` (the training loop marks the run interrupted and
ends the process there), else a KeyboardInterrupt. Not a KeyboardInterrupt alone, because one
raised while TensorFlow's garbage collection runs a `__del__` is printed and dropped, and the
run went on. The handlers stay installed until the run is finished: Keras' own callbacks hold
them only while `fit` runs, and a SIGTERM during the evaluation used to kill the process with
run.json still saying 'running'.
"""

import signal
import sys

MESSAGES = {
    "fit": "finishing this epoch, then saving. Press Ctrl-C again to stop now.",
    "finish": "training is over; finishing the evaluation and saving first. Press Ctrl-C "
              "again to stop now (dlref train --resume finishes it later).",
    "agent": "stopping the agent at its next step and saving its weights. Press Ctrl-C again "
             "to stop now.",
}


class StopRequests:
    """A context manager that turns SIGINT / SIGTERM into a request others can read.

    Args:
        on_first: called on the first signal, after its message (the DQN runner passes it on
            to the keras-rl2 worker).
        on_second: called on the second signal, before the KeyboardInterrupt; it may end the
            process.

    Attributes:
        requested: the first signal's name ('SIGINT'), or None.
        second: the name of the signal that stopped the run at once, or None.
        phase: 'fit' while training, 'finish' after; it picks the message a signal prints.
    """

    def __init__(self, signals=(signal.SIGINT, signal.SIGTERM), on_second=None, on_first=None):
        self.signals, self.on_second, self.on_first = signals, on_second, on_first
        self.requested = self.second = None
        self.phase = "fit"
        self._previous = {}

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._handle) for s in self.signals}
        return self

    def __exit__(self, *exc_info):
        self._restore()
        return False

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.requested:
            self.second = name
            self._restore()
            if self.on_second:
                self.on_second()
            raise KeyboardInterrupt
        self.requested = name
        print(f"\n{name}: {MESSAGES[self.phase]}", file=sys.stderr, flush=True)
        if self.on_first:
            self.on_first()

    def _restore(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


class Latch:
    """SIGINT and SIGTERM raise KeyboardInterrupt at once, and the request stays: `check()`
    raises it again. A search calls `check` after every batch, because a KeyboardInterrupt
    raised while a garbage-collection callback runs is printed and dropped (JAX registers one,
    and Keras imports JAX whenever it is installed), and the search used to run on to its end.
    """

    def __init__(self, signals=(signal.SIGINT, signal.SIGTERM)):
        self.signals, self.requested, self._previous = signals, None, {}

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._handle) for s in self.signals}
        return self

    def __exit__(self, *exc_info):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}
        return False

    def _handle(self, signum, frame):
        self.requested = signal.Signals(signum).name
        raise KeyboardInterrupt

    def check(self):
        if self.requested:
            raise KeyboardInterrupt

    def __deepcopy__(self, memo):
        return self  # keras-tuner deep-copies the callbacks of every trial: one latch for all.
