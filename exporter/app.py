"""HTTP serving: ``/metrics`` gathers a fresh snapshot per scrape; ``/healthz`` says the process is alive.

Starlette on uvicorn, so the agent polls are plain ``await``s on the server's own event loop.
The lifespan owns the resources (database engine, agent HTTP client, slot store) and closes them
on shutdown.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import redis
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from exec_watchdog.common import redaction
from exec_watchdog.common.serving import lifespan, opened
from exec_watchdog.exporter.exposition import CONTENT_TYPE, render_snapshot
from exec_watchdog.exporter.gather import Gatherer, poll_client
from exec_watchdog.exporter.history import RunHistory
from exec_watchdog.exporter.settings import ExporterSettings
from exec_watchdog.exporter.snapshot import Snapshot
from exec_watchdog.platform_access.database import create_engine
from exec_watchdog.platform_access.inflight import InflightStore, RedisInflight, SqlInflight
from exec_watchdog.platform_access.slots import RedisSlots, SlotStore, SqlSlots

INDEX = """exec-watchdog exporter
/metrics  running executions, agent presence and capacity (one fresh scrape per request),
          run history per schedule (read incrementally)
/healthz  200 while the process serves requests
"""


def open_engine(url: str, timeout: float) -> sa.Engine:
    """A read-mostly engine whose connections give up instead of hanging a scrape."""
    if sa.make_url(url).get_backend_name() == "postgresql":
        ms = int(timeout * 1000)
        return create_engine(url, pool_size=2, pool_timeout=timeout, connect_args={
            "connect_timeout": max(1, round(timeout)),
            "options": f"-c statement_timeout={ms} -c default_transaction_read_only=on",
        })
    return create_engine(url)


def render(snapshot: Snapshot) -> bytes:
    """The exposition of one snapshot plus the process's own metrics, in the text format.

    Always the text format 0.0.4, whatever OpenMetrics the scraper would prefer (Prometheus
    accepts both): these families carry nothing only OpenMetrics can say, and the text renderer is
    the fast one (see exporter.exposition).
    """
    return render_snapshot(snapshot) + generate_latest(_PROCESS)


# Process and Python runtime metrics (memory, CPU, open files) about the exporter itself.
_PROCESS = CollectorRegistry()
ProcessCollector(registry=_PROCESS)
PlatformCollector(registry=_PROCESS)


@dataclass(frozen=True, slots=True)
class Scraping:
    """What a scrape needs, opened by the lifespan and closed at shutdown."""

    gatherer: Gatherer
    history: RunHistory


@contextlib.asynccontextmanager
async def open_scraping(settings: ExporterSettings) -> AsyncIterator[Scraping]:
    # Every secret this process holds, so no log line shows one (common/redaction.py).
    redaction.PROCESS.add(settings.agent_secret, *redaction.secrets_of_url(settings.database_url),
                          *redaction.secrets_of_url(settings.redis_url))
    engine = open_engine(settings.database_url, settings.database_timeout)
    client = poll_client(settings.agent_url_template, settings.agent_secret, timeout=settings.agent_timeout,
                         concurrency=settings.poll_concurrency)
    redis_client = None
    slots: SlotStore = SqlSlots(engine)
    inflight: InflightStore = SqlInflight(engine)
    if settings.redis_url:
        redis_client = redis.Redis.from_url(settings.redis_url, socket_timeout=settings.database_timeout,
                                            socket_connect_timeout=settings.database_timeout)
        slots, inflight = RedisSlots(redis_client), RedisInflight(redis_client)
    gatherer = Gatherer(
        engine, client, slots, agent_timeout=settings.agent_timeout,
        poll_concurrency=settings.poll_concurrency, database_timeout=settings.database_timeout,
        scrape_timeout=settings.scrape_timeout, inflight=inflight,
        inflight_max_age_seconds=settings.inflight_max_age_seconds, shard=settings.shard,
        queued_publish_after_seconds=settings.queued_publish_after_seconds,
        activity_publish_after_seconds=settings.activity_publish_after_seconds)
    try:
        yield Scraping(gatherer, RunHistory(engine, owns=settings.shard.owns if settings.shard else None,
                                               window_seconds=settings.advice_window_seconds))
    finally:
        await client.aclose()
        if redis_client is not None:
            redis_client.close()
        engine.dispose()


def create_app(settings: ExporterSettings) -> Starlette:
    async def metrics(request: Request) -> Response:
        # The history read comes after the gather, not beside it: on a busy host the two compete for
        # the same cores and both get slower (bench/history.md); it waits at most what is left.
        scraping = opened(request.app, Scraping)
        started = time.monotonic()
        snapshot = await scraping.gatherer.gather()
        history = await scraping.history.scrape(settings.scrape_timeout - (time.monotonic() - started))
        return Response(render(snapshot) + history, headers={"Content-Type": CONTENT_TYPE})

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def index(_request: Request) -> Response:
        return PlainTextResponse(INDEX)

    return Starlette(routes=[
        Route("/metrics", metrics),
        Route("/healthz", healthz),
        Route("/", index),
    ], lifespan=lifespan(lambda: open_scraping(settings)))
