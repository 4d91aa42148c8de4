"""MLflow's system metrics (the UI's System metrics tab), logged through the buffered run logger.

MLflow's own ``SystemMetricsMonitor`` (3.17.2) collects CPU, memory, disk, network and, through
NVML, every NVIDIA GPU's utilisation, memory and power, and logs them as ``system/…`` metrics
(``system/<node id>/…`` with a node id). Its own logging loop is not used: it asks the server for
the run's status after every sample and stops for good at the first failed request, and it
writes with its own client. Here its collectors are sampled by a daemon thread and every
aggregate goes through ``RunLogger.log_metrics``, so a server that is away costs no sample and
never blocks or stops training: the samples wait in the logger's buffer (and its spool) like any
other metric.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from e2fgvi.tracking.client import MLFLOW_IMPORT, client
from e2fgvi.tracking.logger import RunLogger

if TYPE_CHECKING:
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

log = logging.getLogger(__name__)

PREFIX = "system/"


class SystemMetrics:
    """Samples MLflow's system-metric collectors every ``interval_s`` into ``logger``'s run.

    Args:
        logger: the run's logger (the run may not exist yet: the logger creates it).
        interval_s: seconds between samples; each sample is logged as one step.
        node_id: under multi-node training, this node's id (keys ``system/<node_id>/…``).
        resume: continue the step numbering of the run's earlier system metrics.
        own_logger: close ``logger`` when sampling stops (a logger made only for this).
    """

    def __init__(
        self,
        logger: RunLogger,
        interval_s: float,
        node_id: str | None = None,
        resume: bool = False,
        own_logger: bool = False,
    ) -> None:
        self.logger = logger
        self.own_logger = own_logger
        self.interval_s = interval_s
        self.monitor = _mlflow_monitor(logger.uri, node_id)
        self.node_id = self.monitor.node_id  # MLFLOW_SYSTEM_METRICS_NODE_ID overrides it
        self.step = _next_step(logger) if resume else 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = 0.0

    @property
    def prefix(self) -> str:
        return PREFIX + (f"{self.node_id}/" if self.node_id else "")

    def start(self) -> None:
        self.monitor.collect_metrics()  # primes psutil's CPU counter (its first reading is 0)
        self.monitor.aggregate_metrics()
        for part in self.monitor.monitors:
            part.clear_metrics()
        self._last = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="system-metrics", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling; a last sample covers the time since the previous one (≥ 1 s)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=30)
        self._thread = None
        if time.monotonic() - self._last >= 1.0:
            self._sample()
        if self.own_logger:
            self.logger.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def _sample(self) -> None:
        try:
            self.monitor.collect_metrics()
            values = self.monitor.aggregate_metrics()
            for part in self.monitor.monitors:
                part.clear_metrics()
        except Exception as exc:  # a collector failing must not end training
            log.warning("system metrics sample failed (%s); sampling goes on", exc)
            return
        self._last = time.monotonic()
        self.logger.log_metrics({self.prefix + k: v for k, v in values.items()}, step=self.step)
        self.step += 1


def _mlflow_monitor(uri: str, node_id: str | None) -> SystemMetricsMonitor:
    """MLflow's monitor, only for its collectors (no run, no request is made)."""
    with MLFLOW_IMPORT:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    return SystemMetricsMonitor(run_id=None, node_id=node_id, tracking_uri=uri)


def _next_step(logger: RunLogger) -> int:
    """One past the run's last system-metrics step (0 when unknown or unreachable)."""
    if logger.run_id is None:
        return 0
    try:
        metrics = client(logger.uri).get_run(logger.run_id).data._metric_objs
    except Exception:  # unreachable: restart at 0; the samples' timestamps still order them
        return 0
    steps = [m.step for m in metrics if m.key.startswith(PREFIX)]
    return max(steps) + 1 if steps else 0
