"""Service metrics in the Prometheus text exposition format (version 0.0.4), kept in
process: request counts by route and status, latency histograms by route, batch-size
histograms and queue depths by queue, errors by kind. No client library: the format is
a few lines of text."""

from __future__ import annotations

import bisect
import threading
from collections import defaultdict

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class _Histogram:
    def __init__(self, bounds):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value):
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def lines(self, name, labels):
        cumulative, out = 0, []
        for bound, count in zip((*self.bounds, "+Inf"), self.counts):
            cumulative += count
            out.append(f'{name}_bucket{{{labels}le="{bound}"}} {cumulative}')
        out.append(f"{name}_sum{{{labels.rstrip(',')}}} {self.total}")
        out.append(f"{name}_count{{{labels.rstrip(',')}}} {cumulative}")
        return out


class Metrics:
    """Thread-safe counters, gauges and histograms of one service process."""

    def __init__(self):
        self._lock = threading.Lock()
        self._requests = defaultdict(int)  # (route, method, status) -> count
        self._latency = {}  # route -> histogram
        self._batches = {}  # queue -> histogram
        self._depth = {}  # queue -> items waiting
        self._errors = defaultdict(int)  # kind -> count
        self._gauges = {}  # name -> callable returning a number, read at scrape time

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count a finished request and its latency."""
        with self._lock:
            self._requests[(route, method, status)] += 1
            self._latency.setdefault(route, _Histogram(LATENCY_BUCKETS_S)).observe(seconds)

    def observe_batch(self, queue: str, size: int) -> None:
        """Record the size of one batched call."""
        with self._lock:
            self._batches.setdefault(queue, _Histogram(BATCH_BUCKETS)).observe(size)

    def set_queue_depth(self, queue: str, depth: int) -> None:
        """Record how much is waiting in a queue."""
        self._depth[queue] = depth

    def count_error(self, kind: str) -> None:
        """Count an error answer by kind (bad_request, unauthorized, overloaded, ...)."""
        with self._lock:
            self._errors[kind] += 1

    def gauge(self, name: str, read) -> None:
        """Expose ``read()`` as gauge ``name``, read at each scrape."""
        self._gauges[name] = read

    def render(self) -> str:
        """The Prometheus text format of every metric."""
        with self._lock:
            lines = [
                "# HELP fastretrieve_requests_total HTTP requests answered.",
                "# TYPE fastretrieve_requests_total counter",
            ]
            for (route, method, status), count in sorted(self._requests.items()):
                lines.append(
                    f'fastretrieve_requests_total{{route="{route}",method="{method}",'
                    f'status="{status}"}} {count}'
                )
            lines += [
                "# HELP fastretrieve_request_duration_seconds Request latency.",
                "# TYPE fastretrieve_request_duration_seconds histogram",
            ]
            for route, histogram in sorted(self._latency.items()):
                lines += histogram.lines("fastretrieve_request_duration_seconds", f'route="{route}",')
            lines += [
                "# HELP fastretrieve_batch_size Items per batched call.",
                "# TYPE fastretrieve_batch_size histogram",
            ]
            for queue, histogram in sorted(self._batches.items()):
                lines += histogram.lines("fastretrieve_batch_size", f'queue="{queue}",')
            lines += [
                "# HELP fastretrieve_queue_depth Items waiting in a batching queue.",
                "# TYPE fastretrieve_queue_depth gauge",
            ]
            for queue, depth in sorted(self._depth.items()):
                lines.append(f'fastretrieve_queue_depth{{queue="{queue}"}} {depth}')
            lines += [
                "# HELP fastretrieve_errors_total Error answers by kind.",
                "# TYPE fastretrieve_errors_total counter",
            ]
            for kind, count in sorted(self._errors.items()):
                lines.append(f'fastretrieve_errors_total{{kind="{kind}"}} {count}')
            for name, read in sorted(self._gauges.items()):
                lines += [f"# TYPE {name} gauge", f"{name} {read()}"]
        return "\n".join(lines) + "\n"
