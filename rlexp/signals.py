"""SIGTERM and SIGINT as a stop request: the trainer ends its iteration, checkpoints, then raises.

Python's default SIGTERM ends the process on the spot and W&B loses what it has not flushed yet.
Inside ``stop_on_signals`` the first SIGTERM or SIGINT only sets a ``StopRequest``; the trainer
finishes the iteration it is in, writes a checkpoint and raises ``Interrupted``, which unwinds
every ``with`` block (the logger finishes its run) and exits with 128 + the signal number, so
schedulers see the job did not complete. A second signal raises ``Interrupted`` at once.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

DEFAULT_HANDLERS = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT arrived. A KeyboardInterrupt, so cleanup written for Ctrl-C also runs on SIGTERM."""

    def __init__(self, signum: int, detail: str = ""):
        super().__init__(f"stopped by {signal.Signals(signum).name}{detail}")
        self.signum = signum
        self.exit_code = 128 + signum


class StopRequest:
    """The first SIGTERM/SIGINT received inside ``stop_on_signals``; false until then."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __bool__(self) -> bool:
        return self.signum is not None


def exit_code(exc: BaseException | None) -> int:
    """The exit code a run ends with: 0, 128 + signal number when interrupted, else 1."""
    if exc is None:
        return 0
    if isinstance(exc, Interrupted):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return 128 + signal.SIGINT
    return 1


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Inside the block the first SIGTERM/SIGINT sets the yielded request, a second raises ``Interrupted``.

    Only the interpreter's default handlers are replaced: a handler installed by someone else stays
    (submitit ignores SIGTERM so that a preempted job lives until its requeue signal). Outside the
    main thread, where Python delivers no signals, the request is never set.
    """
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    previous = {signum: signal.getsignal(signum) for signum in DEFAULT_HANDLERS}
    replaced = [signum for signum, handler in previous.items() if handler == DEFAULT_HANDLERS[signum]]

    def handle(signum: int, frame: object) -> None:
        if request:
            raise Interrupted(signum)
        request.signum = signum
        print(f"\nrlexp: {signal.Signals(signum).name} received: finishing this iteration and writing a checkpoint "
              "(send it again to stop at once)", file=sys.stderr, flush=True)

    for signum in replaced:
        signal.signal(signum, handle)
    try:
        yield request
    finally:
        for signum in replaced:
            signal.signal(signum, previous[signum])
