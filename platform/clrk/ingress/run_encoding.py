"""A :class:`~clrk.ingress.records.RunRecord` as the stores keep it: one JSON document.

Both run stores (:mod:`clrk.ingress.run_files`, :mod:`clrk.ingress.redis_runs`) keep a record as
the JSON :func:`encode_record` writes, beside the few fields they query (status, times), so the two
agree on every field and a field added to the record needs no schema change. The envelope is bytes,
kept base64; unknown keys (a newer clrk wrote them) are skipped when read. What the store itself
owns (:attr:`~clrk.ingress.records.RunRecord.result_expired`) is not in the document.

:func:`ended` stamps a final record's times the way both stores do before they write it.
"""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

from clrk.ingress.records import CallbackState, RunRecord, Usage
from clrk_runtime.protocol.invocations import Status

__all__ = ["decode_record", "encode_record", "ended"]

_FIELDS = frozenset(f.name for f in dataclasses.fields(RunRecord))
_STORE_OWNED = frozenset({"result_expired"})


def encode_record(record: RunRecord) -> str:
    """The record as compact JSON (without what the store owns)."""
    document: dict[str, Any] = {
        f.name: getattr(record, f.name) for f in dataclasses.fields(record) if f.name not in _STORE_OWNED
    }
    document["envelope"] = base64.b64encode(record.envelope).decode("ascii")
    document["status"] = str(record.status)
    document["usage"] = None if record.usage is None else dataclasses.asdict(record.usage)
    document["callback"] = None if record.callback is None else dataclasses.asdict(record.callback)
    return json.dumps(document, separators=(",", ":"))


def decode_record(text: str | bytes, *, result_expired: bool = False) -> RunRecord:
    """The record :func:`encode_record` wrote, with the store's ``result_expired`` mark."""
    document = {k: v for k, v in json.loads(text).items() if k in _FIELDS and k not in _STORE_OWNED}
    document["envelope"] = base64.b64decode(document["envelope"])
    document["status"] = Status(document["status"])
    if document.get("usage") is not None:
        document["usage"] = Usage(**document["usage"])
    if document.get("callback") is not None:
        document["callback"] = CallbackState(**document["callback"])
    return RunRecord(**document, result_expired=result_expired)


def ended(record: RunRecord, now: float, retention_s: float) -> RunRecord:
    """A final record with its end and expiry set: ``finished_at`` now and ``expires_at``
    ``retention_s`` later, unless the writer set them. Other records are returned as they are."""
    if not record.final:
        return record
    finished_at = now if record.finished_at is None else record.finished_at
    expires_at = finished_at + retention_s if record.expires_at is None else record.expires_at
    return record.replace(finished_at=finished_at, expires_at=expires_at)
