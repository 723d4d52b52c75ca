"""Prometheus metrics: request counters in-process, state (models, jobs, labels) read at scrape time.

State comes from the model store and Redis rather than from counters, so it is right whichever web
process answers the scrape and includes what the rq workers did. With several gunicorn processes the
request counters use prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by `lsal serve`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from backend.jobs import ranking, stats

if TYPE_CHECKING:
    from backend.server.context import Backend

log = logging.getLogger(__name__)

REQUESTS = Counter("lsal_http_requests", "HTTP requests", ["route", "method", "status"])
LATENCY = Histogram(
    "lsal_http_request_duration_seconds",
    "HTTP request latency",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PREDICTED_TASKS = Counter("lsal_predicted_tasks", "Tasks that got a prediction from /predict")
WEBHOOKS = Counter("lsal_webhooks", "Webhook events received", ["action"])


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    REQUESTS.labels(route=route, method=method, status=str(status)).inc()
    LATENCY.labels(route=route).observe(seconds)


class StateCollector:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def collect(self) -> Iterator[Metric]:
        store = self.backend.store
        info = GaugeMetricFamily("lsal_model_info", "Current model version per project", labels=["project", "version"])
        labelled = GaugeMetricFamily(
            "lsal_labelled_tasks", "Labelled tasks the current model was trained on", labels=["project"]
        )
        versions = GaugeMetricFamily("lsal_model_versions_stored", "Model versions kept on disk", labels=["project"])
        checks = GaugeMetricFamily("lsal_llm_checks", "Human-checked LLM pre-labels", labels=["project"])
        ece = GaugeMetricFamily("lsal_llm_ece", "Expected calibration error of LLM pre-labels",
                                labels=["project", "stage"])  # fmt: skip
        threshold = GaugeMetricFamily("lsal_llm_auto_accept_threshold", "Calibrated confidence that auto-accepts",
                                      labels=["project"])  # fmt: skip
        agreement = GaugeMetricFamily("lsal_llm_agreement", "Share of the LLM's pre-labels of a label that humans "
                                      "confirmed", labels=["project", "label"])  # fmt: skip
        for project_id in store.projects():
            version = store.latest_version(project_id)
            if version is None:
                continue
            project = str(project_id)
            info.add_metric([project, store.prediction_version(project_id) or version], 1)
            meta = store.meta(project_id, version)
            if "labelled" in meta:
                labelled.add_metric([project], float(meta["labelled"]))
            versions.add_metric([project], len(store.versions(project_id)))
            report = meta.get("llm_checks") or {}
            if report.get("checks"):
                checks.add_metric([project], report["checks"])
                for stage in ("raw", "calibrated"):
                    if report.get(f"ece_{stage}") is not None:
                        ece.add_metric([project, stage], report[f"ece_{stage}"])
                if report.get("threshold") is not None:
                    threshold.add_metric([project], report["threshold"])
                for row in report.get("agreement", []):
                    if row.get("precision") is not None:
                        agreement.add_metric([project, row["label"]], row["precision"])
        yield from (info, labelled, versions, checks, ece, threshold, agreement)
        try:
            counts = self.backend.queue.counts()
            runs = stats.training_runs(self.backend.conn)
        except Exception as exc:  # Redis down: report it rather than fail the scrape
            log.warning("metrics: Redis unavailable: %s", exc)
            up = GaugeMetricFamily("lsal_redis_up", "Whether Redis answered this scrape")
            up.add_metric([], 0)
            yield up
            return
        up = GaugeMetricFamily("lsal_redis_up", "Whether Redis answered this scrape")
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("lsal_jobs", "rq jobs by state", labels=["state"])
        for state, count in counts.items():
            jobs.add_metric([state], count)
        yield jobs
        trainings = CounterMetricFamily("lsal_training_runs", "Training jobs by outcome", labels=["status"])
        for status, count in runs.items():
            trainings.add_metric([status], count)
        yield trainings
        preannotations = CounterMetricFamily("lsal_preannotation_runs", "LLM pre-annotation jobs by outcome",
                                             labels=["status"])  # fmt: skip
        for status, count in stats.job_runs(self.backend.conn, "preannotate").items():
            preannotations.add_metric([status], count)
        yield preannotations
        rankings = CounterMetricFamily("lsal_ranking_runs", "Queue rankings by outcome", labels=["status"])
        for status, count in stats.job_runs(self.backend.conn, "rank").items():
            rankings.add_metric([status], count)
        yield rankings
        finetunes = CounterMetricFamily("lsal_finetune_runs", "Encoder fine-tunes by outcome", labels=["status"])
        for status, count in stats.job_runs(self.backend.conn, "finetune").items():
            finetunes.add_metric([status], count)
        yield finetunes
        stop = GaugeMetricFamily("lsal_stop_signal", "Stopping rules: 1 when the rule says stop", labels=["project",
                                 "rule"])  # fmt: skip
        stop_value = GaugeMetricFamily("lsal_stop_signal_value", "Stopping rules: the measured value",
                                       labels=["project", "rule"])  # fmt: skip
        for project_id in store.projects():
            for signal in ranking.stop_signals(self.backend.conn, project_id):
                stop.add_metric([str(project_id), signal["name"]], float(signal["triggered"]))
                if signal.get("value") is not None:
                    stop_value.add_metric([str(project_id), signal["name"]], float(signal["value"]))
        yield stop
        yield stop_value
        tokens = CounterMetricFamily("lsal_llm_tokens", "LLM tokens per project", labels=["project", "kind"])
        spent = CounterMetricFamily("lsal_llm_dollars", "LLM spending per project, USD", labels=["project"])
        requests = CounterMetricFamily("lsal_llm_requests", "LLM requests per project", labels=["project", "cached"])
        for project_id in stats.llm_projects(self.backend.conn):
            spend, project = stats.llm_spend(self.backend.conn, project_id), str(project_id)
            tokens.add_metric([project, "prompt"], spend.get("prompt_tokens", 0))
            tokens.add_metric([project, "completion"], spend.get("completion_tokens", 0))
            spent.add_metric([project], spend.get("dollars", 0.0))
            requests.add_metric([project, "false"], spend.get("requests", 0) - spend.get("cached_requests", 0))
            requests.add_metric([project, "true"], spend.get("cached_requests", 0))
        yield tokens
        yield spent
        yield requests


def render(backend: Backend) -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        base = CollectorRegistry()
        MultiProcessCollector(base)
    else:
        base = REGISTRY
    state = CollectorRegistry(auto_describe=False)
    state.register(StateCollector(backend))
    return generate_latest(base) + generate_latest(state), CONTENT_TYPE_LATEST
