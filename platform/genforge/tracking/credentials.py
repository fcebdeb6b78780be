"""Credentials never live in a tracking URI inside genforge.

A URI such as `https://user:token@host` or `postgresql://u:pass@db/mlflow` would otherwise be copied into
MLflow params, `spec.yaml`, checkpoint metadata, run records, sweep trials and the `--json` line. At the point
where genforge first resolves a URI, the secret moves into the environment variable its client reads (MLflow's
`MLFLOW_TRACKING_USERNAME`/`MLFLOW_TRACKING_PASSWORD` for a tracking server, libpq's `PGPASSWORD` for a
PostgreSQL store) and the URI genforge carries, writes and prints has none. Ray workers started by this process
inherit the environment; on a cluster the credentials live in the environment of the nodes.
"""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit, urlunsplit

from genforge.errors import SpecError

SERVER_SCHEMES = ("http", "https")
POSTGRES_SCHEMES = ("postgresql", "postgresql+psycopg", "postgresql+psycopg2", "postgres")


def _without_password(parts) -> str:
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def adopt_credentials(uri: str) -> str:
    """`uri` without its password, the password (and user) handed to the client's environment variable."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    scheme = parts.scheme.lower()
    if scheme in SERVER_SCHEMES:
        os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(parts.username or "")
        os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(parts.password)
        clean = _without_password(parts).replace(f"{parts.username}@", "", 1)
    elif scheme in POSTGRES_SCHEMES:
        os.environ["PGPASSWORD"] = unquote(parts.password)
        clean = _without_password(parts)
    else:
        raise SpecError(f"tracking URI for {scheme}: carries a password; put it in the database client's "
                        "environment or configuration instead")
    if os.environ.get("MLFLOW_TRACKING_URI") == uri:  # keep the secret out of what children inherit as a URI
        os.environ["MLFLOW_TRACKING_URI"] = clean
    return clean

