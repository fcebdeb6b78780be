"""Serialising promotions. MLflow's alias update is last-writer-wins, so read-compare-set must not
interleave: two promoters could each see the old champion and the worse one could write last.

Local stores (SQLite, file): an exclusive `flock` on a file beside the store, held for the whole
read-compare-set; it covers every process on the host. Tracking servers: a lease kept as a tag on
the registered model (owner token + expiry), written, then read back after a settle delay; a
promoter proceeds only if its own token survived, and an expired lease (crashed holder) is taken over.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
import uuid
from pathlib import Path
from typing import Iterator

from genforge.errors import RunError
from genforge.tracking.uri import local_store_dir

LEASE_TAG = "genforge.promotion_lease"


@contextlib.contextmanager
def file_lock(path: Path, timeout_s: float = 120.0) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RunError(f"timed out after {timeout_s:.0f} s waiting for the promotion lock {path}") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def lease(client, name: str, ttl_s: float = 60.0, settle_s: float = 0.5, timeout_s: float = 120.0) -> Iterator[None]:
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + timeout_s
    while True:
        current = client.get_registered_model(name).tags.get(LEASE_TAG)
        held = json.loads(current) if current else None
        if held is None or held["expires"] < time.time():
            client.set_registered_model_tag(name, LEASE_TAG, json.dumps({"owner": token, "expires": time.time() + ttl_s}))
            time.sleep(settle_s)  # let a concurrent writer's tag land, then see who won
            now = client.get_registered_model(name).tags.get(LEASE_TAG)
            if now and json.loads(now)["owner"] == token:
                break
        if time.monotonic() > deadline:
            raise RunError(f"timed out after {timeout_s:.0f} s waiting for the promotion lease on {name}")
        time.sleep(0.2)
    try:
        yield
    finally:
        now = client.get_registered_model(name).tags.get(LEASE_TAG)
        if now and json.loads(now)["owner"] == token:
            client.delete_registered_model_tag(name, LEASE_TAG)


def promotion_lock(client, name: str):
    store = local_store_dir(client.tracking_uri)
    if store is not None:
        return file_lock(store / f".genforge-promote-{name}.lock")
    return lease(client, name)
