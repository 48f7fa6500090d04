"""Every recovery event the remediators publish on the Redis relay, counted per execution."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from typing import Any

import redis

from exec_watchdog.testbed.waiting import eventually

CHANNEL = "trinity:watchdog"


def open_pubsub(url: str) -> Any:
    """A pub/sub on the Redis at ``url``. redis-py types ``pubsub()`` only from 8.x; going through Any
    keeps this one call clean under both the older and the newer typing."""
    client: Any = redis.Redis.from_url(url, socket_connect_timeout=2)
    return client.pubsub()


class Announcements:
    """Every recovery event published on the relay channel, counted per execution.

    One subscriber thread for the whole run; a paused Redis just delays messages, a restarted
    one is subscribed to again (messages published meanwhile are lost, and counted in ``gaps``).
    """

    def __init__(self, url: str, channel: str = CHANNEL) -> None:
        self.url, self.channel = url, channel
        self.counts: Counter[str] = Counter()
        self.first_seen: dict[str, float] = {}  # time.monotonic() of each execution's first event
        self.gaps = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pubsub = self._subscribe()
        self._thread = threading.Thread(target=self._run, name="announcements", daemon=True)
        self._thread.start()

    def _subscribe(self) -> Any:
        pubsub = open_pubsub(self.url)
        pubsub.subscribe(self.channel)
        eventually(lambda: pubsub.get_message(timeout=0.5), 5, "subscribed to the announcement channel")
        return pubsub

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                message = self._pubsub.get_message(timeout=0.2)
            except (redis.ConnectionError, OSError):
                self.gaps += 1
                with contextlib.suppress(Exception):
                    self._pubsub.close()
                while not self._stop.is_set():
                    try:
                        self._pubsub = self._subscribe()
                        break
                    except (redis.RedisError, OSError, AssertionError):
                        time.sleep(0.5)
                continue
            if message is not None and message["type"] == "message":
                event = json.loads(message["data"])
                with self._lock:
                    self.counts[str(event.get("execution_id"))] += 1
                    self.first_seen.setdefault(str(event.get("execution_id")), time.monotonic())

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def count(self, execution_id: str) -> int:
        with self._lock:
            return self.counts[execution_id]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(Exception):
            self._pubsub.close()
