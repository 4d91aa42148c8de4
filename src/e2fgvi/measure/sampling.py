"""One background thread that polls every probe (GPU, RAPL) at a fixed interval."""

from __future__ import annotations

import logging
import threading
import time
from typing import Protocol

log = logging.getLogger(__name__)


class Probe(Protocol):
    def sample(self) -> None: ...


class SamplerThread:
    """Calls ``probe.sample()`` for each probe every ``interval_s``; measures its own CPU time."""

    def __init__(self, probes: list[Probe], interval_s: float) -> None:
        self.probes = probes
        self.interval_s = interval_s
        self.cpu_s = 0.0
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._sample_all()
        self._thread = threading.Thread(target=self._loop, name="cost-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and take one final sample on the caller's thread."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self._sample_all()

    def _loop(self) -> None:
        start = time.thread_time()
        try:
            while not self._stop.wait(self.interval_s):
                self._sample_all()
        finally:
            self.cpu_s += time.thread_time() - start

    def _sample_all(self) -> None:
        for probe in self.probes:
            try:
                probe.sample()
            except Exception as exc:  # a failing sensor must never stop training
                self.errors += 1
                if self.errors == 1:
                    log.warning(
                        "cost sampler: %s failed (%s); continuing", type(probe).__name__, exc
                    )
