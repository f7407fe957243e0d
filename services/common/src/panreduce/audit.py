"""The audit log: one record per access decision, on logger ``panreduce.audit``.

Each decision (who called, for which proposal, which RPC, on what resource, allowed or
denied, and why) is one log line whose message is a JSON object; with
``PANREDUCE_LOG_FORMAT=json`` the same fields are also the record's ``audit`` key, so a
log shipper can index them. Every value is clipped, so a caller's long input never
makes a long audit line.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger("panreduce.audit")

MAX_FIELD = 256  # characters kept of any one field
_current = threading.local()
T = TypeVar("T")


def _clip(value: object) -> str:
    text = str(value)
    return text if len(text) <= MAX_FIELD else text[:MAX_FIELD] + f"...(+{len(text) - MAX_FIELD})"


def set_rpc(name: str) -> None:
    """Name the RPC this thread is serving (the RPC method decorator does)."""
    _current.rpc = name


def current_rpc() -> str:
    return getattr(_current, "rpc", "")


def decision(
    *, subject: str, proposal: str = "", allowed: bool, reason: str = "", resource: str = "", rpc: str | None = None
) -> dict[str, object]:
    """Record one access decision; returns the record's fields."""
    doc: dict[str, object] = {
        "event": "access",
        "rpc": _clip(rpc if rpc is not None else current_rpc()),
        "subject": _clip(subject),
        "proposal": _clip(proposal),
        "resource": _clip(resource),
        "allowed": bool(allowed),
        "reason": _clip(reason),
    }
    log.log(logging.INFO if allowed else logging.WARNING, json.dumps(doc, sort_keys=True), extra={"audit": doc})
    return doc


def checked(check: Callable[[], T], *, subject: str, proposal: str, resource: str, what: str = "location") -> T:
    """Run an access ``check`` and record its outcome: allowed when it returns, denied
    (with its message as the reason) when it raises; the exception goes on."""
    try:
        result = check()
    except Exception as exc:
        decision(
            subject=subject,
            proposal=proposal,
            resource=resource,
            allowed=False,
            reason=f"{what}: {type(exc).__name__}: {exc}",
        )
        raise
    decision(subject=subject, proposal=proposal, resource=resource, allowed=True, reason=f"{what} allowed")
    return result
