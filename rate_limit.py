"""How many signed forms one client may ask for: a sliding window per client address."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass


@dataclass(frozen=True)
class RateLimit:
    """At most `requests` in any `seconds` (UPLOAD_RATE_LIMIT, e.g. 30/minute)."""

    requests: int
    seconds: int


class RateLimiter:
    """A sliding-window log per client, thread-safe, in a table of bounded size.

    The table keeps the `max_clients` clients seen most recently, in the order they were last
    seen: each request moves its client to the end, and a new client beyond the bound pushes
    out the one seen longest ago. Both are O(1), so a flood of fresh addresses costs each request
    the same small work and the memory stays capped (about 1 KB a client, measured with
    tracemalloc: docs/SECURITY.md). A client pushed out starts again with a full budget; to
    push out a client seen within the window takes `max_clients` other addresses in that time.
    """

    MAX_CLIENTS = 10_000

    def __init__(self, limit: RateLimit, max_clients: int = MAX_CLIENTS) -> None:
        self.limit = limit
        self.max_clients = max_clients
        self.lock = threading.Lock()
        self.clients: OrderedDict[str, deque[float]] = OrderedDict()

    def wait(self, client: str, moment: float) -> int:
        """Record one request and answer 0, or refuse it: the whole seconds until one is allowed."""
        with self.lock:
            times = self.seen(client)
            while times and times[0] <= moment - self.limit.seconds:
                times.popleft()
            if len(times) >= self.limit.requests:
                return max(1, math.ceil(times[0] + self.limit.seconds - moment))
            times.append(moment)
            return 0

    def seen(self, client: str) -> deque[float]:
        """The client's request times, its entry now the most recently seen."""
        times = self.clients.get(client)
        if times is None:
            if len(self.clients) >= self.max_clients:
                self.clients.popitem(last=False)
            times = self.clients[client] = deque()
        else:
            self.clients.move_to_end(client)
        return times
