"""Credentials in a tracking URI move to the client's environment; genforge never carries them in a URI."""

from __future__ import annotations

import pytest

from genforge.errors import SpecError
from genforge.tracking.credentials import adopt_credentials


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PGPASSWORD", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)


def test_server_credentials_move_to_mlflows_variables():
    import os

    assert adopt_credentials("https://alice:s3cr%40t@mlflow.example.com:8443/x") == "https://mlflow.example.com:8443/x"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice" and os.environ["MLFLOW_TRACKING_PASSWORD"] == "s3cr@t"


def test_postgres_password_moves_to_pgpassword():
    import os

    assert adopt_credentials("postgresql://mlflow:pass@db:5432/mlflow") == "postgresql://mlflow@db:5432/mlflow"
    assert os.environ["PGPASSWORD"] == "pass"


def test_uris_without_a_password_are_untouched_and_unknown_schemes_refused():
    for uri in ("http://127.0.0.1:5000", "sqlite:////tmp/x.db", "postgresql://u@db/m", "file:///tmp/mlruns"):
        assert adopt_credentials(uri) == uri
    with pytest.raises(SpecError, match="carries a password"):
        adopt_credentials("mysql://u:pw@db/m")


def test_a_spec_never_keeps_the_password(tmp_path, monkeypatch):
    """The spec genforge logs, checkpoints and copies into sweep trials has no password in it."""
    import yaml

    from genforge.api import as_spec

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "tracking": {"uri": "https://bob:hunter2@mlflow.example.com"}}))
    spec = as_spec(path)
    dumped = yaml.safe_dump(spec.model_dump(mode="json", by_alias=True))
    assert "hunter2" not in dumped and spec.tracking.uri == "https://mlflow.example.com"
    assert "hunter2" not in as_spec(path, ["train.epochs=3"]).model_dump_json()


def test_the_environments_uri_is_cleaned_too(monkeypatch):
    import os

    from genforge.tracking.uri import resolve_tracking_uri

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://carol:pw123@127.0.0.1:5000")
    assert resolve_tracking_uri(None) == "http://127.0.0.1:5000"
    assert (
        os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
        and os.environ["MLFLOW_TRACKING_PASSWORD"] == "pw123"
    )
