"""lsal-ops argument handling that needs no Label Studio: help, usage errors, missing configuration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sdk_scripts.cli import main, parser


@pytest.fixture(autouse=True)
def ls_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from backend.settings import get_settings

    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "key")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()  # the next test reads its own environment


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("connect", "import", "generate", "status", "export"):
        with pytest.raises(SystemExit) as exited:
            parser().parse_args([command, "--help"])
        assert exited.value.code == 0
        assert "usage: lsal-ops " + command in capsys.readouterr().out


def test_usage_errors_are_one_line_with_status_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["connect", "--backend-url", "http://b:9090"]) == 2
    assert "give --project ID, or --title and --labels" in capsys.readouterr().err
    assert main(["connect", "--title", "t", "--labels", "a,b", "--template", str(tmp_path / "no.xml")]) == 2
    assert "no template" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "missing.csv"), "--project", "1"]) == 2
    assert "missing.csv: no such file" in capsys.readouterr().err  # the file's faults come before LS's
    (tmp_path / "t.csv").write_text("text\nhello\n")
    assert main(["import", str(tmp_path / "t.csv"), "--project", "1"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach Label Studio at http://127.0.0.1:9" in err and "Traceback" not in err
    assert main(["generate", "--project", "1", "--model", "some-hosted-model", "--llm-url", "http://llm/v1"]) == 2
    assert "no price for model 'some-hosted-model': add it to LLM_PRICES" in capsys.readouterr().err


def test_missing_label_studio_settings_are_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from backend.settings import get_settings

    monkeypatch.delenv("LABEL_STUDIO_URL")
    get_settings.cache_clear()
    assert main(["status", "--project", "1"]) == 2
    assert "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY must be set" in capsys.readouterr().err
