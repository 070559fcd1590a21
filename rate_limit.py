"""How many signed forms one client may ask for: a sliding window per client address."""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    """At most `requests` in any `seconds` (UPLOAD_RATE_LIMIT, e.g. 30/minute)."""

    requests: int
    seconds: int


class RateLimiter:
    """A sliding-window log per client, thread-safe; idle clients are forgotten when many."""

    MAX_CLIENTS = 10_000

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self.clients: dict[str, deque[float]] = {}

    def wait(self, client: str, moment: float) -> int:
        """Record one request and answer 0, or refuse it: the whole seconds until one is allowed."""
        with self.lock:
            if len(self.clients) > self.MAX_CLIENTS:
                self.forget_idle(moment)
            times = self.clients.setdefault(client, deque())
            while times and times[0] <= moment - self.limit.seconds:
                times.popleft()
            if len(times) >= self.limit.requests:
                return max(1, math.ceil(times[0] + self.limit.seconds - moment))
            times.append(moment)
            return 0

    def forget_idle(self, moment: float) -> None:
        idle = [c for c, times in self.clients.items() if times[-1] <= moment - self.limit.seconds]
        for client in idle:
            del self.clients[client]
