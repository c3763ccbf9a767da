"""The HTTP API of ``prefpair serve`` (FastAPI; the OpenAPI spec is served at ``/openapi.json``).

Writes (``POST``/``PATCH``/``DELETE`` on ``/v1/feedback``, presigned URLs) build a
:class:`~prefpair.schemas.FeedbackEvent` with the contract's own checks and answer ``202``
only after the broker acknowledged it; the Parquet log (and so the reads) catches up once
``prefpair consume`` has flushed. Reads query the log with DuckDB.

This module assembles the app: the state the routes share (:mod:`~prefpair.service.state`),
the error handlers (:mod:`~prefpair.service.refusals`), the middleware
(:mod:`~prefpair.service.middleware`) and the routes by resource
(:mod:`~prefpair.service.feedback_routes`, :mod:`~prefpair.service.token_routes`,
:mod:`~prefpair.service.read_routes`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from prefpair import __version__
from prefpair.config import Settings
from prefpair.errors import ConfigError
from prefpair.service.config import ServiceConfig
from prefpair.service.erasure_routes import add_erasure_routes
from prefpair.service.experiment_routes import ExperimentCatalog, add_experiment_routes
from prefpair.service.feedback_routes import add_feedback_routes
from prefpair.service.followers import FollowerStarter
from prefpair.service.limits import BodySizeLimit
from prefpair.service.middleware import CheckedJsonRoute, JsonRefusalCORSMiddleware
from prefpair.service.read_routes import add_read_routes
from prefpair.service.reads import LogReader
from prefpair.service.refusals import install_error_handlers
from prefpair.service.routing import REPLAYED_HEADER
from prefpair.service.signal_routes import add_signal_routes
from prefpair.service.sink import FeedbackSink
from prefpair.service.state import API_KEY_HEADER, ServiceState, key_fingerprint
from prefpair.service.token_ledger import TokenEvents
from prefpair.service.token_routes import add_token_admin_routes, add_token_routes
from prefpair.service.tokens import TokenSigner

log = logging.getLogger("prefpair.service")

# key_fingerprint was defined here; it stays importable from here.
__all__ = ["SinkFactory", "create_app", "default_sink", "key_fingerprint"]


SinkFactory = Callable[[Settings, ServiceConfig], FeedbackSink]



def default_sink(settings: Settings, config: ServiceConfig) -> FeedbackSink:
    from prefpair.service.sink import KafkaSink

    return KafkaSink(settings, ack_timeout=config.ack_timeout)


def create_app(
    settings: Settings,
    config: ServiceConfig,
    sink_factory: SinkFactory | None = None,
) -> FastAPI:
    """The ASGI app; the sink (Kafka producer) opens at startup and is flushed and closed at shutdown."""
    if not config.token_secrets:
        raise ConfigError("token_secrets", "empty: give at least one KID:SECRET")
    state = ServiceState(
        settings=settings,
        config=config,
        signer=TokenSigner(config.token_secrets),
        reader=LogReader(settings.log_dir),
    )
    factory = sink_factory or default_sink

    catalog = ExperimentCatalog(settings, state.instance)
    token_events = state.token_events = TokenEvents(settings, state.ledger, state.instance, config.token_max_ttl)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.sink = await run_in_threadpool(factory, settings, config)
        # Token events first: a token revoked elsewhere is refused from the first token request on.
        followers = FollowerStarter([token_events, catalog])
        state.followers = followers
        followers.start()
        try:
            if not await run_in_threadpool(followers.wait, config.ack_timeout):
                log.warning("tokens and experiments topics not read yet: their routes answer 503 until they are")
            log.info("serving feedback to topic %s; reading %s", settings.feedback_topic, settings.log_dir)
            yield
        finally:
            state.followers = None
            await run_in_threadpool(followers.close)
            sink, state.sink = state.sink, None
            if sink is not None:
                await run_in_threadpool(sink.close)
            log.info("flushed and closed the producer")

    app = FastAPI(
        title="prefpair feedback API",
        version=__version__,
        description=(
            "Log feedback on LLM inferences to Kafka, hand out presigned feedback URLs, and read the "
            "joined Parquet log. Writes answer 202 once the broker acknowledged the event."
        ),
        lifespan=lifespan,
        redirect_slashes=False,  # a path that is not a route is a 404, never a redirect to another one
    )
    app.router.route_class = CheckedJsonRoute
    app.state.prefpair = state
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes)
    if config.cors_origins:
        app.add_middleware(
            JsonRefusalCORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=["Content-Type", API_KEY_HEADER],
            expose_headers=["Retry-After", REPLAYED_HEADER],
            max_age=600,
        )
    add_routes(app, state, catalog)
    return app


def add_routes(app: FastAPI, state: ServiceState, catalog: ExperimentCatalog) -> None:
    """Every route, in the order the OpenAPI spec lists them."""
    add_feedback_routes(app, state)
    add_signal_routes(app, state)
    add_token_routes(app, state)
    add_token_admin_routes(app, state)
    add_experiment_routes(app, state, catalog)
    add_read_routes(app, state)
    add_erasure_routes(app, state)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, Any]:
        """Liveness: whether the producer is open and the tokens and experiments topics are followed."""
        ready = state.sink is not None and state.followers is not None and state.followers.ready
        return {"status": "ok" if ready else "starting", "version": __version__}
