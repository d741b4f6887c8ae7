"""The worker's stop flag, installed when this module is imported: the worker imports it first,
before the 4 s of TensorFlow and keras-rl2 imports, so that a signal arriving during them is
kept for the first step rather than lost (a worker started from a script may inherit SIGINT as
ignored) or turned into a traceback."""

import signal


class StopFlag:
    """SIGINT and SIGTERM set a flag that the callbacks read at the next step: keras-rl2's
    `fit` catches the KeyboardInterrupt they raise there and returns, with every file whole.
    Installed explicitly: a process started from a script may inherit SIGINT as ignored."""

    def __init__(self):
        self.requested = None
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum, frame):
        self.requested = signal.Signals(signum).name

    def check(self):
        if self.requested:
            raise KeyboardInterrupt


STOP = StopFlag()
