"""Server-side sessions: the browser holds only a random session id (an HttpOnly cookie);
the bearer token, the CSRF token and a login in progress stay here, in memory."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from panreduce_web.oidc import Pending

COOKIE = "panreduce_session"
SECURE_COOKIE = "__Host-panreduce_session"  # https: bound to this host, path / and Secure


@dataclass
class Session:
    sid: str
    csrf: str
    created: float
    seen: float
    expires: float
    token: str | None = None  # the bearer token sent to the gateway (None: not logged in)
    subject: str = ""
    logged_in: bool = False
    pending: Pending | None = None  # an OIDC login in progress
    streams: int = 0  # open event streams
    extra: dict[str, object] = field(default_factory=dict)


class Sessions:
    """``idle``: seconds a session lives unused; ``lifetime``: at most this long after
    login (an OIDC session also ends with its access token); ``capacity``: sessions kept
    (the least recently used go first)."""

    def __init__(self, *, idle: float = 8 * 3600, lifetime: float = 24 * 3600, capacity: int = 10_000) -> None:
        self.idle, self.lifetime, self.capacity = idle, lifetime, capacity
        self._items: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def new(self) -> Session:
        now = time.time()
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), now, now, now + self.lifetime)
        with self._lock:
            self._items[s.sid] = s
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return s

    def get(self, sid: str | None) -> Session | None:
        if not sid or len(sid) > 100:
            return None
        now = time.time()
        with self._lock:
            s = self._items.get(sid)
            if s is None:
                return None
            if now - s.seen > self.idle or now > s.expires:
                del self._items[sid]
                return None
            s.seen = now
            self._items.move_to_end(sid)
            return s

    def login(self, old: Session | None, token: str | None, subject: str, expires: float | None = None) -> Session:
        """A fresh session (new id and CSRF token: no fixation) holding ``token``."""
        if old is not None:
            self.drop(old)
        s = self.new()
        s.token, s.subject, s.logged_in = token, subject, True
        if expires is not None:
            s.expires = min(s.expires, expires)
        return s

    def drop(self, s: Session) -> None:
        with self._lock:
            self._items.pop(s.sid, None)

    def __len__(self) -> int:
        return len(self._items)
