"""The HTTP surface with Flask's test client: protocol shapes, auth and every bad input."""

from __future__ import annotations

import base64

import pytest
from flask.testing import FlaskClient

from backend.server import create_app
from backend.settings import Settings
from backend.student import ModelStore, StudentModel
from tests.helpers import NEGATIVE, NO_CHOICES, POSITIVE, SINGLE

AUTH = {"Authorization": "Basic " + base64.b64encode(b"user:secret").decode()}


@pytest.fixture
def client(settings: Settings) -> FlaskClient:
    return create_app(settings).test_client()


def _train(settings: Settings, project_id: int = 1) -> str:
    model = StudentModel(["Positive", "Negative"]).fit(POSITIVE + NEGATIVE, [("Positive",)] * 6 + [("Negative",)] * 6)
    return ModelStore(settings.models_path).save(project_id, model, {"labelled": 12})


def test_health_and_root(client: FlaskClient) -> None:
    for path in ("/", "/health"):
        response = client.get(path, headers=AUTH)
        assert response.status_code == 200
        assert response.json["status"] == "UP"


def test_every_route_needs_auth(client: FlaskClient) -> None:
    for method, path in [("GET", "/health"), ("POST", "/setup"), ("POST", "/predict"), ("GET", "/metrics"),
                         ("GET", "/versions"), ("POST", "/webhook"), ("POST", "/train")]:  # fmt: skip
        response = client.open(path, method=method, json={})
        assert response.status_code == 401, path
        assert response.json["error"] == "unauthorized"
    wrong = {"Authorization": "Basic " + base64.b64encode(b"user:wrong").decode()}
    assert client.get("/health", headers=wrong).status_code == 401


def test_webhook_secret_opens_only_the_webhook(client: FlaskClient) -> None:
    secret = {"X-Webhook-Secret": "hook-secret"}
    assert client.get("/health", headers=secret).status_code == 401
    response = client.post("/webhook", headers=secret, json={"action": "PROJECT_UPDATED", "project": {"id": 1}})
    assert response.status_code == 200 and response.json["status"] == "ignored"
    bad = client.post("/webhook", headers={"X-Webhook-Secret": "nope"}, json={"action": "PROJECT_UPDATED"})
    assert bad.status_code == 401


def test_setup_reports_untrained_then_the_current_version(client: FlaskClient, settings: Settings) -> None:
    body = {"project": "1.1700000000", "schema": SINGLE}
    assert client.post("/setup", headers=AUTH, json=body).json == {"model_version": "untrained"}
    first = _train(settings)
    assert client.post("/setup", headers=AUTH, json=body).json == {"model_version": first}
    second = _train(settings)
    assert second != first
    assert client.post("/setup", headers=AUTH, json=body).json == {"model_version": second}
    versions = client.get("/versions?project=1", headers=AUTH).json
    assert versions == {"versions": [first, second], "current": second}
    assert client.open("/versions", method="GET", headers=AUTH, json={"project": "1.17"}).json["current"] == second


def test_setup_refuses_a_config_it_cannot_serve(client: FlaskClient) -> None:
    response = client.post("/setup", headers=AUTH, json={"project": "1.17", "schema": NO_CHOICES})
    assert response.status_code == 422
    assert "no supported control" in response.json["message"]


def test_predict_with_a_trained_model(client: FlaskClient, settings: Settings) -> None:
    version = _train(settings)
    tasks = [
        {"id": 1, "data": {"text": "love it, wonderful"}},
        {"id": 2, "data": {"title": "no text field"}},
        {"id": 3, "data": {"text": "hate it, awful"}},
    ]
    response = client.post("/predict", headers=AUTH, json={"project": "1.17", "label_config": SINGLE, "tasks": tasks})
    assert response.status_code == 200
    results = response.json["results"]
    assert len(results) == 3 and results[1] == []
    assert results[0]["model_version"] == version and results[2]["model_version"] == version
    assert results[0]["result"][0]["value"]["choices"] == ["Positive"]
    assert results[2]["result"][0]["value"]["choices"] == ["Negative"]
    assert results[0]["score"] != results[2]["score"]


def test_predict_uses_the_config_from_setup(client: FlaskClient, settings: Settings) -> None:
    _train(settings, project_id=2)
    client.post("/setup", headers=AUTH, json={"project": "2.17", "schema": SINGLE})
    response = client.post("/predict", headers=AUTH, json={"project": "2.17", "tasks": [{"data": {"text": "love"}}]})
    assert response.status_code == 200 and response.json["results"][0]["result"]


def test_predict_bad_inputs(client: FlaskClient) -> None:
    cases = [
        (b"{not json", 400, "must be JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"tasks": "nope"}', 400, "'tasks' must be a list"),
        (b'{"tasks": [{"data": {"text": "x"}}], "label_config": "<View/>"}', 400, "'project' is required"),
        (b'{"tasks": [{"data": {"text": "x"}}], "project": "9.1"}', 422, "no label config for project 9"),
        (b'{"tasks": [{"data": {}}], "project": "abc", "label_config": "x"}', 400, "not a project id"),
    ]
    for raw, status, message in cases:
        response = client.post("/predict", headers=AUTH, data=raw, content_type="application/json")
        assert response.status_code == status, raw
        assert response.is_json and message in response.json["message"], response.json
    no_control = {"project": "1", "label_config": NO_CHOICES, "tasks": [{"data": {"text": "x"}}]}
    response = client.post("/predict", headers=AUTH, json=no_control)
    assert response.status_code == 422 and "no supported control" in response.json["message"]


def test_predict_empty_and_untrained(client: FlaskClient) -> None:
    empty = client.post("/predict", headers=AUTH, json={"project": "1", "label_config": SINGLE, "tasks": []})
    assert empty.status_code == 200 and empty.json["results"] == []
    tasks = [{"data": {"text": "a"}}, {"data": {"text": "b"}}]
    untrained = client.post("/predict", headers=AUTH, json={"project": "1", "label_config": SINGLE, "tasks": tasks})
    assert untrained.status_code == 200 and untrained.json["results"] == [[], []]


def test_project_id_falls_back_to_the_tasks(client: FlaskClient, settings: Settings) -> None:
    _train(settings, project_id=4)
    body = {"label_config": SINGLE, "tasks": [{"id": 1, "project": 4, "data": {"text": "love"}}]}
    assert client.post("/predict", headers=AUTH, json=body).json["results"][0]["result"]


def test_webhook_bad_inputs(client: FlaskClient) -> None:
    unknown = client.post("/webhook", headers=AUTH, json={"action": "SOMETHING_NEW", "project": {"id": 1}})
    assert unknown.status_code == 400 and "unknown action" in unknown.json["message"]
    assert client.post("/webhook", headers=AUTH, json={"project": {"id": 1}}).status_code == 400
    no_project = client.post("/webhook", headers=AUTH, json={"action": "ANNOTATION_CREATED"})
    assert no_project.status_code == 400 and "'project' is required" in no_project.json["message"]
    garbage = client.post("/webhook", headers=AUTH, data=b"\x00\x01", content_type="application/json")
    assert garbage.status_code == 400 and garbage.is_json


def test_webhook_with_redis_down_is_a_clear_503(client: FlaskClient) -> None:
    response = client.post("/webhook", headers=AUTH, json={"action": "START_TRAINING", "project": {"id": 1}})
    assert response.status_code == 503
    assert response.json["error"] == "queue_unavailable"


def test_project_deleted_archives_its_models(client: FlaskClient, settings: Settings) -> None:
    _train(settings, project_id=3)
    response = client.post("/webhook", headers=AUTH, json={"action": "PROJECT_DELETED", "project": {"id": 3}})
    assert response.json["status"] == "archived"
    assert ModelStore(settings.models_path).latest_version(3) is None


def test_errors_are_json_never_html(client: FlaskClient, settings: Settings) -> None:
    assert client.get("/nope", headers=AUTH).status_code == 404
    assert client.get("/nope", headers=AUTH).is_json
    assert client.get("/predict", headers=AUTH).status_code == 405
    assert client.get("/predict", headers=AUTH).is_json
    version = _train(settings)
    (settings.models_path / "project-1" / f"{version}.pkl").write_bytes(b"corrupt")
    body = {"project": "1", "label_config": SINGLE, "tasks": [{"data": {"text": "x"}}]}
    broken = client.post("/predict", headers=AUTH, json=body)
    assert broken.status_code == 500 and broken.is_json and broken.json["error"] == "internal_error"


def test_metrics_exposition(client: FlaskClient, settings: Settings) -> None:
    version = _train(settings, project_id=6)
    client.get("/health", headers=AUTH)
    text = client.get("/metrics", headers=AUTH).get_data(as_text=True)
    assert f'lsal_model_info{{project="6",version="{version}"}} 1.0' in text
    assert 'lsal_labelled_tasks{project="6"} 12.0' in text
    assert 'lsal_http_requests_total{method="GET",route="/health",status="200"}' in text
    assert "lsal_redis_up 0.0" in text  # this app's Redis refuses connections: said, not hidden
