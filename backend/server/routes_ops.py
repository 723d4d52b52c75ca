"""The routes for people and ops tools: validate, pre-annotate, the LLM report, the queue, rank, metrics."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request, send_file

from backend import kinds
from backend.jobs import llm_answers, ranking, stats
from backend.jobs.queue import PREANNOTATE, RANK
from backend.jobs.state import ProjectState
from backend.llm.annotator import pre_labels
from backend.llm.cascade import CHEAP, STRONG, STUDENT, stage_from_report
from backend.llm.cascade import report as report_stages
from backend.llm.routing import AUTO_ACCEPT
from backend.server import metrics
from backend.server.context import current_backend
from backend.server.http import enqueued, json_body
from backend.server.protocol import ProtocolError, project_ref
from backend.student.store import RELIABILITY_PNG

routes = Blueprint("ops", __name__)


@routes.post("/validate")
def validate() -> Response:
    config = json_body().get("config")
    spec = current_backend().label_configs.spec(config)
    unfilled = kinds.not_predicted(config, spec)
    extra = {"not_predicted": unfilled, "message": "; ".join(unfilled)} if unfilled else {}
    return jsonify(status="ok", **kinds.kind_of(spec).describe(spec), **extra)


@routes.post("/preannotate")
def preannotate() -> tuple[Response, int]:
    """LLM pre-labels for every unlabelled task of the project, as a background job."""
    ref = project_ref(json_body().get("project"))
    if not current_backend().settings.llm_enabled:
        raise ProtocolError("the LLM is off (LLM_ENABLED=false)", status=409)
    return enqueued(ref.id, "preannotate", PREANNOTATE)


@routes.get("/llm")
def llm_report() -> Response:
    """What human labels say about the LLM: checks, ECE raw and calibrated, threshold, agreement, routes,
    and for label distributions accuracy and ECE raw, bias-corrected and calibrated."""
    backend = current_backend()
    ref = project_ref(request.args.get("project"))
    version = backend.store.latest_version(ref.id)
    checks = backend.store.meta(ref.id, version).get("llm_checks") if version else None
    report: dict[str, Any] = {"project": ref.id, "student_version": version,
                              "llm_revision": backend.store.llm_revision(ref.id), "checks": checks}  # fmt: skip
    if backend.store.llm_revision(ref.id) is not None:
        answers = llm_answers.all_answers(backend.conn, ref.id)
        labels = pre_labels(list(answers.values()), *backend.calibration(ref.id, version))
        report["answers"] = len(answers)
        report["auto_accept"] = sum(1 for label in labels if label.route == AUTO_ACCEPT)
        report["review"] = len(labels) - report["auto_accept"]
        report["spend"] = stats.llm_spend(backend.conn, ref.id)
    distribution = (checks or {}).get("distribution") or {}
    # accuracy, ECE and log-loss of the label distributions: raw, prior divided out, calibrated (out of fold)
    report["distribution"] = {"checks": distribution["checks"], **distribution["stages"],
                              "threshold": distribution.get("threshold")} if distribution else None  # fmt: skip
    report["cascade"] = cascade_report(backend, ref.id, version)
    return jsonify(report)


def cascade_report(backend: Any, project_id: int, version: str | None) -> list[dict[str, Any]]:
    """Per stage, cheapest first: items asked and accepted, tokens, dollars, seconds, its threshold and
    the checked precision at it; then the items left to humans."""
    meta = backend.store.meta(project_id, version) if version else {}
    totals = stats.cascade_totals(backend.conn, project_id)
    stages = [stage_from_report(STUDENT, meta.get("student_checks"), needs_calibrator=False),
              stage_from_report(CHEAP, meta.get("llm_checks"))]  # fmt: skip
    if backend.settings.llm_strong_base_url or STRONG in totals:
        stages.append(stage_from_report(STRONG, meta.get("strong_llm_checks")))
    return report_stages(stages, totals)


@routes.get("/llm/reliability.png")
def reliability_plot() -> Response:
    ref = project_ref(request.args.get("project"))
    path = current_backend().store.project_dir(ref.id) / RELIABILITY_PNG
    if not path.is_file():
        raise ProtocolError(f"project {ref.id} has no reliability plot yet: it needs human-checked LLM "
                            "pre-labels and a retraining", status=404)  # fmt: skip
    return send_file(path.resolve(), mimetype="image/png", max_age=0)


@routes.get("/queue")
def queue_report() -> Response:
    """The published active-learning queue (tasks in the order LS serves them), rounds and stop signals."""
    backend = current_backend()
    ref = project_ref(request.args.get("project"))
    conn = backend.conn
    enabled = ProjectState(conn).queue_enabled(ref.id, backend.settings.queue_enabled)
    return jsonify(project=ref.id, enabled=enabled, queue=ranking.published_queue(conn, ref.id),
                   rounds=ranking.rounds(conn, ref.id), signals=ranking.stop_signals(conn, ref.id))  # fmt: skip


@routes.post("/queue/settings")
def queue_settings() -> tuple[Response, int]:
    """`{"project": <id>, "enabled": false}`: whether LS serves this project's ranking (kept in Redis)."""
    body = json_body()
    ref = project_ref(body.get("project"))
    enabled = body.get("enabled")
    if not isinstance(enabled, bool):
        raise ProtocolError("'enabled' must be true or false")
    ProjectState(current_backend().conn).set_queue_enabled(ref.id, enabled)
    return jsonify(project=ref.id, enabled=enabled), 200


@routes.post("/rank")
def rank() -> tuple[Response, int]:
    """Re-rank the project's pool now (it also happens after every retraining)."""
    ref = project_ref(json_body().get("project"))
    return enqueued(ref.id, "rank", RANK)


@routes.get("/metrics")
def metrics_route() -> Response:
    payload, content_type = metrics.render(current_backend())
    return Response(payload, content_type=content_type)
