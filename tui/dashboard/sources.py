"""Where the run and watch dashboards' records come from: a run trained here (``RunSource``), or
a session another process writes (``WatchSource``); replay's source is ``replay.ReplaySource``.

Each source has a ``work()`` that a Textual thread worker runs, and a ``queue`` the screen drains on
its redraw timer. The queue is bounded and ``put`` blocks, so a producer that outruns the screen
waits (backpressure) instead of growing memory; metric records are never dropped. Training is
paused by holding the lazy ``Run.records`` generator between records (``Controls.pausable``, in
this process or, by signal, in a trainer child), which writes a ``paused`` event once it holds.
"""

from __future__ import annotations

import os
import queue
import signal
import threading
from typing import Any

from sgdwalk.control import PAUSE_SIGNAL, RESUME_SIGNAL, Controls
from sgdwalk.errors import SessionError
from sgdwalk.records import RUNNING
from sgdwalk.session import Session

QUEUE_MAX = 5_000


class Source:
    """Common parts: the queue, the stop flag and the end of the work."""

    def __init__(self) -> None:
        self.queue: queue.Queue[object] = queue.Queue(maxsize=QUEUE_MAX)
        self.stop_event = threading.Event()
        self.done = threading.Event()

    def put(self, rec: object) -> None:
        """Hand a record to the screen; wait while the screen is behind, unless stopping."""
        while True:
            try:
                self.queue.put(rec, timeout=0.2)
                return
            except queue.Full:
                if self.stop_event.is_set() and self.done.is_set():
                    return

    def drain(self, limit: int = 20_000) -> list[object]:
        out: list[object] = []
        try:
            while len(out) < limit:
                out.append(self.queue.get_nowait())
        except queue.Empty:
            pass
        return out

    def work(self) -> Any:
        raise NotImplementedError

    def stop(self) -> None:
        self.stop_event.set()


class RunSource(Source):
    """A run prepared in this process, trained in the worker thread, written to its session."""

    def __init__(self, run: Any, writer: Any, name: str, info: dict[str, Any],
                 log_to: Any = None) -> None:  # fmt: skip
        super().__init__()
        self.run, self.writer, self.name, self.info = run, writer, name, info
        self.log_to = log_to  # the trackers the records also go to (``sgdwalk.trackers``)
        self.controls = Controls()  # the same pause/stop a signalled headless trainer obeys
        self.status = RUNNING

    @property
    def paused(self) -> bool:
        return self.controls.paused.is_set()

    def work(self) -> str:
        from sgdwalk.runner import drive

        try:
            records = self.controls.pausable(self.run.records(self.controls.should_stop))
            self.status = drive(records, self.writer, self.put, self.log_to)
            return self.status
        finally:
            self.done.set()

    def pause(self) -> None:
        self.controls.paused.set()

    def resume(self) -> None:
        self.controls.paused.clear()

    def stop(self) -> None:
        self.stop_event.set()
        self.controls.stop.set()


class WatchSource(Source):
    """A session written by another process, live or finished."""

    def __init__(
        self, session: Session, pid: int | None = None, detached: bool = False, owned: bool = False
    ) -> None:  # ``detached``: passed by ``dashboards.watch``, read by nothing here
        super().__init__()
        self.session = session
        self.name = session.name
        self.info = session.info
        self._reader = Session(session.db)  # the worker thread owns `session`, the UI this one
        # the writer's process: the one this dashboard started, or the one the session names
        # when it runs on this machine (so p and s work for a reattached run too)
        self.pid = pid if pid is not None else self._writer_pid()
        self.owned = owned  # started by this dashboard without --detach: quitting stops it
        self.paused = False
        self.error: BaseException | None = None  # what ended the follower thread, if it failed

    @property
    def can_pause(self) -> bool:
        return self.pid is not None and self.writer_alive

    def _writer_pid(self) -> int | None:
        try:
            return self._reader.writer_pid()
        except SessionError:
            return None

    def work(self) -> None:
        """Follow in a daemon thread and wait for it or for ``stop``.

        ``Session.follow`` sleeps between polls and only returns when the writer is done, and an
        executor thread is joined when the process exits; so the follower itself runs as a daemon
        and this worker returns as soon as the dashboard stops watching.
        """
        follower = threading.Thread(target=self._follow, name="sgdwalk-follow", daemon=True)
        follower.start()
        try:
            while follower.is_alive() and not self.stop_event.wait(0.1):
                pass
            if self.error is not None:
                raise self.error
        finally:
            self.done.set()

    def _follow(self) -> None:
        try:
            for rec in self.session.follow(poll=0.25):
                if self.stop_event.is_set():
                    return
                self.put(rec)
        except BaseException as e:  # handed to the worker, which reports it in the dashboard
            self.error = e

    @property
    def writer_alive(self) -> bool:
        """Whether a writer is running the session (False when its meta cannot be read)."""
        try:
            return self._reader.alive
        except SessionError:
            return False

    @property
    def status(self) -> str:
        return self._reader.status

    @property
    def stored_status(self) -> str:
        return self._reader.stored_status

    @property
    def heartbeat_age(self) -> float:
        return self._reader.heartbeat_age

    @property
    def phase(self) -> dict[str, Any] | None:
        """The long computation the writer is in, from its heartbeat (None: none, or unknown)."""
        try:
            return self._reader.phase
        except SessionError:
            return None

    def _signal_writer(self, sig: int | None) -> bool:
        if self.pid is None or sig is None or not self.writer_alive:
            return False
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def stop_writer(self) -> bool:
        """Ask the writing process to stop cleanly (SIGTERM → status interrupted)."""
        return self._signal_writer(signal.SIGTERM)

    def pause(self) -> bool:
        """Hold the writer's training between steps (its heartbeat goes on)."""
        if self._signal_writer(PAUSE_SIGNAL):
            self.paused = True
        return self.paused

    def resume(self) -> bool:
        if self._signal_writer(RESUME_SIGNAL):
            self.paused = False
        return not self.paused

    def close(self) -> None:
        self._reader.close()
