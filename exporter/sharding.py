"""One exporter's share of the fleet when N exporters watch it: ``--shard K/N``.

An agent belongs to exactly one shard, decided from its name alone: SHA-256 of the name (stable
across processes, machines and Python versions, unlike ``hash()``), then jump consistent hashing
(Lamping and Veach, 2014) onto N buckets, so growing from N to N+1 shards moves only about
1/(N+1) of the agents. A shard reads only the running rows of its agents and polls only its
agents; together the N shards publish every execution exactly once, and Prometheus, scraping
them all, sees the same series one exporter would publish (with a different ``instance``).

In a Kubernetes StatefulSet the shard index is the pod's ordinal, so ``K`` may also be the pod
name (``exec-watchdog-exporter-2/4`` is shard 2 of 4).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import sqlalchemy as sa

from exec_watchdog.platform_access.database import BadRow, Execution, running_agent_names, running_executions

_POD_ORDINAL = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?-(\d+)$")
MAX_SHARDS = 1024


def jump_hash(key: int, buckets: int) -> int:
    """Jump consistent hash: the bucket in ``range(buckets)`` of a 64-bit ``key``."""
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        j = int((b + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return b


def shard_of(agent: str, count: int) -> int:
    """The shard (0 .. count-1) that owns ``agent``."""
    key = int.from_bytes(hashlib.sha256(agent.encode("utf-8")).digest()[:8], "big")
    return jump_hash(key, count)


@dataclass(frozen=True, slots=True)
class Shard:
    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_SHARDS:
            raise ValueError(f"the number of shards must be from 1 to {MAX_SHARDS}, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard index {self.index} is not in 0..{self.count - 1}")

    def owns(self, agent: str | None) -> bool:
        # Rows without an agent name are nobody's agent; shard 0 reads them, so they are counted
        # as invalid rows once.
        if not agent:
            return self.index == 0
        return shard_of(agent, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def read_running(self, conn: sa.Connection) -> tuple[list[Execution], list[BadRow]]:
        """This shard's running executions: first which agents have any, then only their rows."""
        mine = [name for name in running_agent_names(conn) if self.owns(name)]
        return running_executions(conn, agent_names=mine)


def parse_shard(text: str) -> Shard:
    """``K/N`` (``0/4``), where K may be a StatefulSet pod name ending in its ordinal."""
    index_text, sep, count_text = text.strip().rpartition("/")
    if not sep or not count_text.isdigit():
        raise ValueError(f"{text!r} is not K/N (e.g. 0/4, or POD_NAME/4 in a StatefulSet)")
    if index_text.isdigit():
        index = int(index_text)
    elif match := _POD_ORDINAL.match(index_text):
        index = int(match.group(2))
    else:
        raise ValueError(f"{text!r}: the shard index {index_text!r} is neither a number nor a pod name "
                         "ending in its ordinal (exec-watchdog-exporter-2)")
    return Shard(index, int(count_text))
