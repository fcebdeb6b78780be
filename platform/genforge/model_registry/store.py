"""Registry calls that tell "does not exist" apart from "the server did not answer".

Only MLflow's RESOURCE_DOES_NOT_EXIST (or a missing alias) means "none". Anything else (a timeout, a
5xx, a refused connection, 401) is an outage: it aborts with a RunError naming the server, so a blip never
reads as "no champion" or "no registered versions" and nothing is decided on it.
"""

from __future__ import annotations

from typing import Callable, TypeVar

from genforge.errors import RunError

T = TypeVar("T")
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"


def is_not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) == NOT_FOUND


def registry_call(fn: Callable[[], T], what: str, missing_ok: bool = False) -> T | None:
    """Run one registry call. With `missing_ok`, "does not exist" returns None; any other MLflow or connection
    error is an outage (RunError, exit 1)."""
    from mlflow.exceptions import MlflowException

    try:
        return fn()
    except MlflowException as exc:
        if missing_ok and is_not_found(exc):
            return None
        raise RunError(f"MLflow registry error while {what}: {str(exc).splitlines()[0][:300]}") from exc
    except OSError as exc:  # requests' ConnectionError and timeouts are OSErrors
        raise RunError(f"MLflow registry unreachable while {what}: {exc}") from exc


def holder_version(client, name: str, alias: str) -> int | None:
    """The version holding `alias`, or None when the model or the alias does not exist (an outage raises)."""
    model = registry_call(lambda: client.get_registered_model(name), f"reading {name}", missing_ok=True)
    version = (model.aliases or {}).get(alias) if model is not None else None
    return int(version) if version is not None else None
