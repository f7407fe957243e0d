"""Prometheus metrics shared by every PaNReduce server in a process."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

JOBS = Counter("panreduce_jobs_total", "Jobs finished, by outcome", ["server", "technique", "state"])
JOBS_RUNNING = Gauge("panreduce_jobs_running", "Jobs running now", ["server", "technique"])
JOB_SECONDS = Histogram(
    "panreduce_job_duration_seconds",
    "Wall time of finished jobs",
    ["server", "technique"],
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)
# The gateway's scaling signals (a KEDA ScaledObject per technique scales on them): jobs
# waiting for a ready replica of the technique, and jobs of it running through the gateway
# (panreduce_jobs_running{server="gateway"}).
QUEUE_DEPTH = Gauge(
    "panreduce_queue_depth", "Jobs the gateway holds until a replica of their technique is ready", ["technique"]
)
BYTES_STAGED = Counter("panreduce_input_bytes_total", "Input bytes staged", ["server", "technique"])
RPCS = Counter("panreduce_rpcs_total", "RPCs handled, by method and status code", ["server", "method", "code"])

_started: set[int] = set()


def serve_metrics(port: int, addr: str = "0.0.0.0") -> None:
    """Expose /metrics on ``port`` (once per process and port)."""
    if port and port not in _started:
        start_http_server(port, addr=addr)
        _started.add(port)
