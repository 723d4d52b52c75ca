"""The HTTP surface with Flask's test client: protocol shapes, auth and every bad input."""

from __future__ import annotations

import base64
from pathlib import Path

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
    # this Redis refuses connections: the archive happened, so the webhook is still acknowledged, and says so
    assert response.status_code == 200 and response.json["status"] == "archived"
    assert "Redis is unavailable, the project's state is kept" in response.json["message"]
    assert ModelStore(settings.models_path).latest_version(3) is None


def test_tasks_deleted_without_redis_is_a_503_not_a_500(client: FlaskClient) -> None:
    body = {"action": "TASKS_DELETED", "project": {"id": 3}, "tasks": [{"id": 1}]}
    response = client.post("/webhook", headers=AUTH, json=body)
    assert response.status_code == 503 and response.json["error"] == "queue_unavailable"


def test_queue_settings_need_a_boolean_and_auth(client: FlaskClient) -> None:
    assert client.post("/queue/settings", json={"project": 3, "enabled": False}).status_code == 401
    for enabled in (None, "false", 0):
        response = client.post("/queue/settings", headers=AUTH, json={"project": 3, "enabled": enabled})
        assert response.status_code == 400 and "'enabled' must be true or false" in response.json["message"]
    dead = client.post("/queue/settings", headers=AUTH, json={"project": 3, "enabled": False})
    assert dead.status_code == 503 and dead.json["error"] == "queue_unavailable"


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


# --- hardening: each test below failed on the code before it was written ------------------------------


def test_project_ids_are_bounded_to_what_ls_hands_out(client: FlaskClient, settings: Settings) -> None:
    huge = "9" * 300
    requests = [
        ("POST", "/setup", {"project": huge, "schema": SINGLE}),
        ("POST", "/predict", {"project": huge, "label_config": SINGLE, "tasks": [{"data": {"text": "x"}}]}),
        ("GET", f"/versions?project={huge}", None),
        ("GET", f"/llm?project={huge}", None),
        ("GET", f"/llm/reliability.png?project={huge}", None),
        ("GET", f"/queue?project={2**64}", None),
        ("POST", "/webhook", {"action": "START_TRAINING", "project": {"id": 2**64}}),
        ("POST", "/rank", {"project": 2**31}),
    ]
    for method, path, body in requests:
        response = client.open(path, method=method, headers=AUTH, json=body)
        assert response.status_code == 400, (path, response.json)
        assert "not a project id" in response.json["message"] and "2147483647" in response.json["message"]
        assert len(response.json["message"]) < 200  # the 300 digits are not echoed back
    assert not list(settings.data_dir.rglob("*999999*"))  # no file or folder was named after the id


def test_deeply_nested_json_is_a_400_on_every_post_route(client: FlaskClient) -> None:
    body = b"[" * 100_000 + b"]" * 100_000
    for path in ("/setup", "/predict", "/webhook", "/train", "/rank", "/preannotate", "/validate", "/versions"):
        response = client.post(path, headers=AUTH, data=body, content_type="application/json")
        assert response.status_code == 400, path
        assert response.json["error"] == "bad_request" and "nested too deeply" in response.json["message"]


def test_redis_down_is_a_503_on_every_route_that_needs_it(client: FlaskClient, settings: Settings) -> None:
    _train(settings, project_id=7)
    (settings.models_path / "project-7" / "LLM_REVISION").write_text("1")  # as a pre-annotation run leaves it
    for method, path, body in [("GET", "/queue?project=7", None), ("GET", "/llm?project=7", None),
                               ("POST", "/rank", {"project": 7}), ("POST", "/train", {"project": 7})]:  # fmt: skip
        response = client.open(path, method=method, headers=AUTH, json=body)
        assert response.status_code == 503, path
        assert response.json["error"] == "queue_unavailable"


def test_request_bodies_and_label_configs_are_bounded(settings: Settings) -> None:
    small = settings.model_copy(update={"max_request_mb": 0.5, "max_label_config_kb": 64, "label_config_cache_mb": 1})
    app = create_app(small)
    client = app.test_client()
    too_big = client.post("/predict", headers=AUTH, data=b"{" + b" " * 600_000 + b"}", content_type="application/json")
    assert too_big.status_code == 413 and too_big.json["error"] == "request_entity_too_large"
    padding = "<!--" + "x" * 70_000 + "-->"
    big_config = SINGLE.replace("</View>", padding + "</View>")
    for path, body in [("/validate", {"config": big_config}), ("/setup", {"project": 1, "schema": big_config})]:
        response = client.post(path, headers=AUTH, json=body)
        assert response.status_code == 413 and "MAX_LABEL_CONFIG_KB" in response.json["message"], path
    configs = app.extensions["lsal"].label_configs
    for project in range(1, 41):  # 40 distinct configs of ~60 KB: 2.4 MB offered to a 1 MB budget
        config = SINGLE.replace("</View>", f"<!--{project}{'y' * 60_000}--></View>")
        assert client.post("/setup", headers=AUTH, json={"project": project, "schema": config}).status_code == 200
        assert configs.cached_bytes <= 2**20
    assert configs.for_project(40) is not None  # the most recent ones are kept


def test_internal_errors_do_not_show_file_paths(client: FlaskClient, settings: Settings) -> None:
    version = _train(settings)
    (settings.models_path / "project-1" / f"{version}.pkl").write_bytes(b"corrupt")
    body = {"project": "1", "label_config": SINGLE, "tasks": [{"data": {"text": "x"}}]}
    broken = client.post("/predict", headers=AUTH, json=body)
    assert broken.status_code == 500
    assert str(settings.data_dir) not in broken.json["message"] and "/" not in broken.json["message"]
    assert "internal error" in broken.json["message"]


@pytest.mark.parametrize("half", [{"basic_auth_user": "user"}, {"basic_auth_pass": "secret"}])
def test_half_configured_basic_auth_is_refused(tmp_path: Path, half: dict[str, str]) -> None:
    from pydantic import ValidationError

    from backend.settings import settings_error

    with pytest.raises(ValidationError) as caught:
        Settings(data_dir=tmp_path, **half)
    line = settings_error(caught.value)
    assert "\n" not in line and "set both for basic auth, or neither" in line
    assert ("BASIC_AUTH_PASS is not" if "basic_auth_user" in half else "BASIC_AUTH_USER is not") in line


CHOICES_AND_LABELS = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text"><Choice value="Positive"/><Choice value="Negative"/></Choices>
  <Labels name="ner" toName="text"><Label value="PER"/></Labels>
</View>"""


def test_validate_and_setup_say_a_labels_control_beside_choices_is_not_predicted(client: FlaskClient) -> None:
    validated = client.post("/validate", headers=AUTH, json={"config": CHOICES_AND_LABELS})
    assert validated.status_code == 200
    assert validated.json["control"] == "sentiment"
    assert validated.json["not_predicted"] == [
        "the <Labels> on a <Text> object 'ner' is not predicted: this backend fills the "
        "<Choices> on a <Text> object 'sentiment' only"
    ]
    assert "'ner' is not predicted" in validated.json["message"]
    setup = client.post("/setup", headers=AUTH, json={"project": "3.17", "schema": CHOICES_AND_LABELS})
    assert setup.status_code == 200
    assert setup.json["not_predicted"] == validated.json["not_predicted"]
    assert "not_predicted" not in client.post("/validate", headers=AUTH, json={"config": SINGLE}).json


def test_setup_refuses_a_labels_only_config_saying_spans_are_not_served_yet(client: FlaskClient) -> None:
    response = client.post("/setup", headers=AUTH, json={"project": "4.17", "schema": NO_CHOICES})
    assert response.status_code == 422
    assert "<Labels> on a <Text> object is not served yet" in response.json["message"]
