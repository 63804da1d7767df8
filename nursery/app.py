"""Wiring: the services of one instance, their background tasks, and what serves them.

``open_services`` owns the store and broker connections; ``run_background`` owns the tasks
that live as long as the instance (broker subscription, presence upkeep, tombstone purge,
audit log writer, audit retention); ``create_edge`` builds the instance's listener around them: the edge's own
routes (REST, health, the /ws and GraphQL websockets) and, behind them, a fresh Quart-Trio app
(Quart apps are single-use) for GraphQL over HTTP, the web client and the metrics.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio
from quart_trio import QuartTrio

from nursery import logs
from nursery.api.errors import error_response, install_error_handlers, json_dumps, response_for
from nursery.api.graphql import PATH as GRAPHQL_PATH
from nursery.api.graphql import Engine, build_schema, graphql_blueprint, graphql_router
from nursery.api.graphql.errors import error as graphql_error
from nursery.api.health import health_router
from nursery.api.metrics import metrics_blueprint
from nursery.api.passed_on import app_routes
from nursery.api.rest import rest_router
from nursery.api.security import Hardening, parse_origins
from nursery.api.web import web_blueprint
from nursery.api.ws import ws_router
from nursery.config import Settings
from nursery.edge import Edge, EdgeLimits, Request, Response, Router
from nursery.edge.http import HttpLimits
from nursery.edge.websocket import FrameLimits
from nursery.errors import NurseryError, StoreUnavailable
from nursery.metrics import Metrics
from nursery.pubsub import open_broker
from nursery.pubsub.broker import Broker, Presence
from nursery.ratelimit import open_rate_limiter
from nursery.ratelimit.local_first import LocalFirstLimiter
from nursery.service.accounts import Accounts
from nursery.service.activity import Activity
from nursery.service.audit import Audit
from nursery.service.hub import Hub
from nursery.service.limits import Limits
from nursery.service.notify import Notifier
from nursery.service.retention import AuditRetention
from nursery.service.session import SessionLimits
from nursery.service.session_cache import SessionCache
from nursery.service.todos import Todos
from nursery.service.tokens import TokenSigner
from nursery.stores.asyncio_thread import AsyncioThread, open_asyncio_thread
from nursery.stores.audit import AuditStore
from nursery.stores.base import Store
from nursery.stores.mongo import open_mongo_store
from nursery.stores.postgres import PostgresStore, open_postgres_store
from nursery.stores.postgres.audit import PostgresAuditStore
from nursery.stores.split import SplitStore

log = logging.getLogger(__name__)

PURGE_PERIOD = 3600.0


@dataclass
class Services:
    settings: Settings
    store: Store
    broker: Broker
    presence: Presence
    hub: Hub
    notifier: Notifier
    accounts: Accounts
    todos: Todos
    limits: Limits
    write_limiter: LocalFirstLimiter
    metrics: Metrics
    audit: Audit
    audit_store: AuditStore
    activity: Activity
    retention: AuditRetention
    draining: bool = False


@asynccontextmanager
async def open_services(
    settings: Settings, database_url: str, secret_key: str
) -> AsyncIterator[Services]:
    """Connect to the stores and the broker; close them on exit."""
    metrics = Metrics()
    async with (
        open_asyncio_thread() as aio,
        open_postgres_store(
            database_url,
            aio,
            pool_size=settings.db_pool_size,
            timeout=settings.db_timeout,
            connect_timeout=settings.db_connect_timeout,
            observe=metrics.store_operation,
        ) as postgres,
        _open_documents(settings, aio, postgres, metrics) as (store, audit_store),
        open_broker(settings) as (broker, presence),
        open_rate_limiter(settings) as limiter,
    ):
        notifier = Notifier(broker)
        write_limiter = LocalFirstLimiter(limiter)
        limits = Limits(
            limiter,
            login_per_account=settings.login_rate_per_account,
            login_per_client=settings.login_rate_per_client,
            register_per_client=settings.register_rate_per_client,
            writes_per_user=settings.write_rate_per_user,
            on_limited=metrics.rate_limited,
            write_limiter=write_limiter,
        )
        tokens = TokenSigner(secret_key, settings.token_max_age)
        sessions = SessionCache(
            broker_live=lambda: broker.connected, ttl=settings.session_cache_ttl
        )
        audit = Audit(
            settings.name, capacity=settings.audit_buffer_size, batch_size=settings.audit_batch_size
        )
        services = Services(
            settings=settings,
            store=store,
            broker=broker,
            presence=presence,
            hub=Hub(
                broker, presence, presence_ttl=settings.presence_ttl, revocations=sessions,
                setup_concurrency=settings.ws_setup_concurrency,
                follow_timeout=settings.broker_timeout,
            ),
            notifier=notifier,
            accounts=Accounts(
                store, tokens, notifier, presence, limits,
                password_min_length=settings.password_min_length, audit=audit,
                sessions=sessions,
            ),
            todos=Todos(store, notifier, limits, audit=audit),
            limits=limits,
            write_limiter=write_limiter,
            metrics=metrics,
            audit=audit,
            audit_store=audit_store,
            activity=Activity(audit_store),
            retention=AuditRetention(audit_store, days=settings.audit_retention_days),
        )
        _expose_live_counters(services)
        yield services


@asynccontextmanager
async def _open_documents(
    settings: Settings, aio: AsyncioThread, postgres: PostgresStore, metrics: Metrics
) -> AsyncIterator[tuple[Store, AuditStore]]:
    """Where todos and the audit log live: MongoDB when ``mongo_url`` is set (users and
    sessions stay in PostgreSQL), else PostgreSQL."""
    if not settings.mongo_url:
        yield postgres, PostgresAuditStore(postgres)
        return
    async with open_mongo_store(
        settings.mongo_url,
        aio,
        pool_size=settings.db_pool_size,
        timeout=settings.db_timeout,
        observe=metrics.store_operation,
    ) as mongo:
        log.info("todos, audit log and analytics in MongoDB")
        yield SplitStore(postgres, mongo), mongo


def _expose_live_counters(services: Services) -> None:
    m, hub, notifier = services.metrics, services.hub, services.notifier
    limits = services.limits
    m.gauge("nursery_websockets_open", "Open sync connections", lambda: hub.connection_count)
    m.gauge("nursery_store_pool_connections", "Store connections open",
            lambda: services.store.pool_use()[0])
    m.gauge("nursery_store_pool_in_use", "Store connections in use",
            lambda: services.store.pool_use()[1])
    m.count("nursery_broker_publishes", "Events published", lambda: notifier.published)
    m.count("nursery_broker_publish_failures", "Events that could not be published",
            lambda: notifier.failures)
    m.count("nursery_broker_received", "Broker messages received", lambda: hub.received)
    m.count("nursery_broker_undecodable", "Broker messages this version cannot read (ignored)",
            lambda: hub.undecodable)
    m.count("nursery_broker_publish_batches", "Round trips that published events (batched)",
            lambda: notifier.batches)
    m.count("nursery_rate_limit_failed_open", "Writes let through while Redis was down",
            lambda: limits.failed_open)
    m.count("nursery_rate_limit_charges", "Batches of write hits shared with the other instances",
            lambda: services.write_limiter.charges)
    m.count("nursery_broker_reconnects", "Broker subscriptions lost and re-established",
            lambda: getattr(services.broker, "reconnects", 0))
    sessions = services.accounts.session_cache
    m.count("nursery_session_cache_hits", "Requests authenticated from the session cache",
            lambda: sessions.hits)
    m.count("nursery_session_cache_misses", "Requests whose session was read from the store",
            lambda: sessions.misses)
    audit = services.audit
    m.count("nursery_audit_entries_recorded", "Audit entries accepted into the buffer",
            lambda: audit.recorded)
    m.count("nursery_audit_entries_dropped", "Audit entries dropped: the buffer was full",
            lambda: audit.dropped)
    m.count("nursery_audit_entries_stored", "Audit entries written to the store",
            lambda: audit.stored)
    m.count("nursery_audit_entries_lost", "Audit entries not written by shutdown",
            lambda: audit.lost)
    m.gauge("nursery_audit_buffer_used", "Audit entries waiting to be written",
            lambda: audit.buffered)
    m.count("nursery_audit_entries_pruned", "Audit entries this instance deleted (retention)",
            lambda: services.retention.pruned)


async def run_background(
    services: Services, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """The instance's long-lived tasks; started once the broker subscription is live."""
    async with trio.open_nursery() as nursery:
        await nursery.start(services.broker.subscribe, services.hub.deliver)
        await nursery.start(services.hub.keep_presence)
        await nursery.start(services.write_limiter.run)
        nursery.start_soon(_purge_tombstones, services)
        await nursery.start(services.audit.run, services.audit_store)
        await nursery.start(services.retention.run)
        await nursery.start(logs.flush_regularly)
        task_status.started()


async def _purge_tombstones(services: Services) -> None:
    retention = services.settings.tombstone_retention
    while True:
        try:
            purged = await services.store.purge_tombstones(retention)
            if purged:
                log.info("purged %d tombstones older than %.0f s", purged, retention)
        except StoreUnavailable as exc:
            log.warning("tombstone purge skipped: %s", exc)
        await trio.sleep(min(PURGE_PERIOD, retention / 2))


class ErrorShape:
    """How the edge's own refusals look (``edge.listener.ErrorShape``): ``{"error": ...}``,
    but GraphQL's ``{"errors": [...]}`` on the GraphQL paths, as its clients expect (a body
    too large, say)."""

    def __init__(self, graphql_paths: frozenset[str]) -> None:
        self._graphql_paths = graphql_paths

    def error(self, request: Request, status: int, code: str, message: str) -> Response:
        if request.path in self._graphql_paths:
            body = json_dumps({"errors": [graphql_error(message, code)]}).encode()
            return Response(status, body, [("content-type", "application/json")])
        return error_response(status, code, message)

    def response_for(self, error: NurseryError) -> Response:
        return response_for(error)


def session_limits(settings: Settings) -> SessionLimits:
    """What every websocket session obeys, /ws and GraphQL alike."""
    return SessionLimits(
        hello_timeout=settings.ws_hello_timeout,
        ping_interval=settings.ws_ping_interval,
        ping_timeout=settings.ws_ping_timeout,
        send_timeout=settings.ws_send_timeout,
        queue_size=settings.ws_queue_size,
        message_rate=settings.ws_message_rate,
        max_sockets_per_user=settings.ws_max_sockets_per_user,
    )


def create_edge(services: Services) -> Edge:
    settings = services.settings
    engine = Engine(build_schema())
    limits = session_limits(settings)
    router = Router()
    router.include(rest_router(
        services.accounts, services.todos, settings.trust_proxy_headers,
        activity=services.activity,
    ))
    router.include(health_router(services.store, lambda: services.draining, settings.name))
    router.include(ws_router(
        services.accounts, services.todos, services.hub, instance=settings.name, limits=limits,
        observer=services.metrics,
    ))
    router.include(graphql_router(
        engine, services.accounts, services.todos, services.hub, settings=settings,
        limits=limits, observer=services.metrics,
    ))
    app = create_app(services, engine)
    router.include(app_routes(app))  # one table: the app's routes are matched here too
    return Edge(
        router,
        app,
        limits=EdgeLimits(
            http=HttpLimits(
                max_body=settings.max_body_bytes,
                max_url=settings.http_max_url_bytes,
                max_headers=settings.http_max_headers,
                max_header_bytes=settings.http_max_header_bytes,
                header_timeout=settings.http_header_timeout,
                body_min_rate=settings.http_body_min_rate,
                request_timeout=settings.http_request_timeout,
                idle_timeout=settings.http_idle_timeout,
                send_timeout=settings.http_send_timeout,
            ),
            websocket=FrameLimits(
                max_message=settings.ws_max_message_bytes,
                max_fragments=settings.ws_max_fragments,
                frame_rate=settings.ws_frame_rate,
            ),
            connections_per_client=settings.http_connections_per_client,
            uncapped_peers=settings.http_uncapped_peers,
            trust_proxy_headers=settings.trust_proxy_headers,
        ),
        hardening=Hardening(parse_origins(settings.cors_origins)),
        errors=ErrorShape(graphql_paths=frozenset({GRAPHQL_PATH})),
        metrics=services.metrics,
        draining=lambda: services.draining,
    )


def create_app(services: Services, engine: Engine) -> QuartTrio:
    """What the edge passes on: GraphQL over HTTP, the web client, the metrics."""
    settings = services.settings
    app = QuartTrio(__name__, static_folder=None)  # the web client serves its own files
    # Our tasks are owned by run_background, not app.nursery: no need to wait for it.
    app.config["BACKGROUND_TASK_SHUTDOWN_TIMEOUT"] = 0.5
    install_error_handlers(app)
    app.register_blueprint(graphql_blueprint(engine, services.accounts, services.todos, settings))
    app.register_blueprint(web_blueprint())
    app.register_blueprint(metrics_blueprint(services.metrics))
    return app
