"""Prometheus metrics of a server's runs, in a registry of its own (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from fathom.result import Result

# Run latency buckets, in seconds: RLM runs take from a second to many minutes.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)


class Metrics:
    """Runs by outcome, in progress, queued; iterations, sub-calls, tokens, dollars, latency."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.runs = Counter("fathom_runs", "Runs ended, by outcome (a stop reason, "
                            "'cancelled' or 'rejected').", ["outcome"], registry=r)
        self.in_progress = Gauge("fathom_runs_in_progress", "Runs running now.", registry=r)
        self.queued = Gauge("fathom_queue_length", "Runs waiting for a free slot.", registry=r)
        self.iterations = Counter("fathom_iterations", "Root iterations of all runs.",
                                  registry=r)
        self.sub_calls = Counter("fathom_sub_calls", "Sub-calls (llm_query) of all runs.",
                                 registry=r)
        self.tokens = Counter("fathom_tokens", "Model tokens, by kind.", ["kind"], registry=r)
        self.usd = Counter("fathom_usd", "Dollars spent on models.", registry=r)
        self.latency = Histogram("fathom_run_seconds", "Seconds from a run's start to its end.",
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.requests = Counter("fathom_http_requests", "HTTP requests, by route and status.",
                                ["route", "status"], registry=r)

    def finished(self, result: Result, seconds: float) -> None:
        """Count a run that ended with a Result."""
        usage = result.total_usage
        self.runs.labels(result.stop_reason).inc()
        self.iterations.inc(result.iterations)
        self.tokens.labels("prompt").inc(usage.prompt_tokens)
        self.tokens.labels("completion").inc(usage.completion_tokens)
        self.usd.inc(usage.usd)
        self.latency.observe(seconds)

    def text(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
