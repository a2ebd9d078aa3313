"""SIGTERM and SIGINT as an exception in the main thread, so open runs finish with their data flushed.

Python's default SIGTERM ends the process on the spot and W&B loses what it has not flushed yet.
Raising ``Interrupted`` instead unwinds the training loop through every ``with`` block (the logger
finishes its run), and the exit code 128 + signal number tells schedulers the job did not complete.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

DEFAULT_HANDLERS = {signal.SIGTERM: signal.SIG_DFL, signal.SIGINT: signal.default_int_handler}


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGINT arrived. A KeyboardInterrupt, so cleanup written for Ctrl-C also runs on SIGTERM."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum
        self.exit_code = 128 + signum


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
def interrupts_raise() -> Iterator[None]:
    """Inside the block SIGTERM and SIGINT raise ``Interrupted`` once; a second signal acts as before.

    Only the interpreter's default handlers are replaced: a handler installed by someone else stays
    (submitit ignores SIGTERM so that a preempted job lives until its requeue signal). Outside the
    main thread, where Python delivers no signals, nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in DEFAULT_HANDLERS}
    replaced = [signum for signum, handler in previous.items() if handler == DEFAULT_HANDLERS[signum]]

    def handle(signum: int, frame: object) -> None:
        signal.signal(signum, previous[signum])
        raise Interrupted(signum)

    for signum in replaced:
        signal.signal(signum, handle)
    try:
        yield
    finally:
        for signum in replaced:
            signal.signal(signum, previous[signum])
