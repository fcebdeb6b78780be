"""Tracking URI and storage resolution, done once on the driver.

Ray workers do not share the driver's working directory, so every location is made absolute here:
a relative `sqlite:///mlflow.db` would otherwise open a fresh, empty store inside each worker.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

MLFLOW_DEFAULT_URI = "sqlite:///mlflow.db"  # MLflow 3's own default, relative to the working directory


def resolve_tracking_uri(spec_uri: str | None) -> str:
    """`tracking.uri`, else MLFLOW_TRACKING_URI, else MLflow's default; local paths made absolute, and any
    password moved out of the URI into its client's environment variable (see credentials.py)."""
    from genforge.tracking.credentials import adopt_credentials

    uri = adopt_credentials(spec_uri or os.environ.get("MLFLOW_TRACKING_URI") or MLFLOW_DEFAULT_URI)
    if uri.startswith("sqlite:///"):
        path = uri[len("sqlite:///") :]
        return "sqlite:///" + str(Path(path).expanduser().resolve()) if not path.startswith("/") else uri
    if uri.startswith("file:"):
        return Path(urlparse(uri).path).resolve().as_uri()
    if "://" not in uri:  # a bare directory: MLflow's file store
        return Path(uri).expanduser().resolve().as_uri()
    return uri


def store_identity(tracking_uri: str) -> str:
    """What a tracking URI points at, for comparing stores: the real path of a local store, or the normalised
    scheme, host, port and path of a server (`sqlite:////a//b.db` and `sqlite:////a/b.db` are one store)."""
    from urllib.parse import urlsplit

    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///"):
        return "sqlite:" + os.path.realpath(uri[len("sqlite:///") :])
    if uri.startswith("file:"):
        return "file:" + os.path.realpath(urlparse(uri).path)
    parts = urlsplit(uri)
    default_port = {"http": 80, "https": 443}.get(parts.scheme.lower())
    port = parts.port if parts.port not in (None, default_port) else None
    host = (parts.hostname or "") + (f":{port}" if port else "")
    return f"{parts.scheme.lower()}://{host}{parts.path.rstrip('/')}"


def local_store_dir(tracking_uri: str) -> Path | None:
    """Directory holding a local tracking store (the SQLite file's folder), or None for a server."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///") :]).parent
    if tracking_uri.startswith("file:"):
        return Path(urlparse(tracking_uri).path).parent
    return None


def default_storage_path(tracking_uri: str) -> Path:
    """Checkpoints and Ray results live beside the tracking store (never in ~/ray_results, which every
    working directory of the user shares); for a tracking server, under the working directory."""
    base = local_store_dir(tracking_uri) or Path.cwd()
    return (base / "genforge_runs").resolve()


def artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """Artifacts of a local store go beside it, whatever directory the driver was started from."""
    base = local_store_dir(tracking_uri)
    return (base / "mlruns" / experiment).as_uri() if base else None


def require_existing_store(tracking_uri: str) -> str:
    """Commands that read runs must not create an empty SQLite store by looking for one."""
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri[len("sqlite:///") :]).is_file():
        from genforge.errors import SpecError

        raise SpecError(f"no MLflow store at {tracking_uri} (set --tracking-uri or MLFLOW_TRACKING_URI)")
    return tracking_uri


def check_tracking_server(tracking_uri: str, timeout_s: float = 10.0) -> str:
    """Before any work starts: a tracking server that does not answer at all, or refuses the credentials, is bad
    input (SpecError, exit 2) named in one line. Local stores pass through untouched."""
    import base64
    import urllib.error
    import urllib.request

    from genforge.errors import SpecError

    if not tracking_uri.startswith(("http://", "https://")):
        return tracking_uri
    request = urllib.request.Request(f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1")
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    elif os.environ.get("MLFLOW_TRACKING_TOKEN"):
        request.add_header("Authorization", f"Bearer {os.environ['MLFLOW_TRACKING_TOKEN']}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):
            return tracking_uri
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise SpecError(f"tracking server {tracking_uri} refused the credentials (HTTP {exc.code}); set "
                            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD") from None
        return tracking_uri  # it answers: a 5xx now is an outage for the command itself to report
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SpecError(f"tracking server {tracking_uri} does not answer ({reason}); start it or fix tracking.uri / "
                        "MLFLOW_TRACKING_URI") from None
