"""Names that become paths, artifact keys or registry keys: one pattern each, checked before anything is written.

A run name becomes a directory, an experiment name a folder beside a local store, a model name and an alias
keys in the MLflow registry. None may contain a path separator, `..`, a URL-encoded dot or slash, or start with
`/` or a scheme, so no name can escape its folder or address something else.
"""

from __future__ import annotations

import re

from genforge.errors import SpecError

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"  # run, experiment and registered model names
ALIAS_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
RESERVED_ALIAS = re.compile(r"^(latest|v\d+)$", re.IGNORECASE)  # MLflow reserves these for versions


def check_name(value: str, what: str) -> str:
    """`value` if it is a safe name (no separators, no `..`), else a SpecError naming `what`."""
    if not isinstance(value, str) or not re.match(NAME_PATTERN, value) or ".." in value:
        raise SpecError(f"{what}: {value!r} is not a valid name (letters, digits, '.', '_', '-'; no '..', '/', ':' "
                        "or spaces; at most 100 characters)")
    return value


def check_alias(value: str, what: str = "--alias") -> str:
    """`value` if it may be a registry alias: a name MLflow does not reserve (`latest`, `v1`, ...)."""
    if not isinstance(value, str) or not re.match(ALIAS_PATTERN, value):
        raise SpecError(f"{what}: {value!r} is not a valid alias (a letter, then letters, digits, '_' or '-')")
    if RESERVED_ALIAS.match(value):
        raise SpecError(f"{what}: {value!r} is reserved by MLflow for version references; choose another alias")
    return value
