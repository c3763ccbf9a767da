"""Comparative experiments over HTTP: ``POST /v1/experiments`` defines one (API key), ``GET
/v1/experiments`` lists them and ``GET /v1/experiments/{id}`` shows one.

Definitions are events on the experiments topic (:mod:`prefpair.schemas.experiments`); each
instance follows the topic (:class:`ExperimentCatalog`), so a definition made through one is listed
by all. Judgments join an experiment with ``experiment_id`` on ``POST /v1/feedback``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Annotated

from fastapi import FastAPI, Path

from prefpair.config import Settings
from prefpair.event_topics import EventTopicError, TopicFollower, TopicRecord, TopicWriter, ensure_topic
from prefpair.schemas import ValidationError
from prefpair.schemas.experiments import ID_MAX, Experiment
from prefpair.service.exceptions import DeliveryError, RefusedError
from prefpair.service.models import ExperimentCreate, ExperimentList, ExperimentOut
from prefpair.service.reads import iso_ms
from prefpair.service.routing import ERRORS, Caller
from prefpair.service.state import ServiceState

log = logging.getLogger("prefpair.service")

EXPERIMENTS_PATH = "/v1/experiments"


class ExperimentCatalog:
    """The experiments topic as one instance sees it: a follower folding definitions, and a writer."""

    def __init__(self, settings: Settings, instance: str) -> None:
        self.settings = settings
        self.instance = instance
        self._lock = threading.Lock()
        self._definitions: dict[str, Experiment] = {}
        self._writer: TopicWriter | None = None
        self._follower: TopicFollower | None = None

    def start(self, timeout: float) -> None:
        topic = self.settings.experiments_topic
        ensure_topic(self.settings, topic, compact=True, timeout=timeout)
        follower = TopicFollower(self.settings, topic, self._on_record, group_prefix=f"prefpair-serve-{self.instance}")
        follower.start()
        if not follower.wait_caught_up(timeout):
            follower.close()
            raise EventTopicError(topic, f"not read to its end within {timeout:g}s")
        self._follower = follower
        self._writer = TopicWriter(self.settings, topic)

    def _on_record(self, record: TopicRecord) -> None:
        try:
            self._keep(Experiment.from_bytes(record.value))
        except ValidationError as exc:
            log.warning("skipped an experiment event that is not a definition (offset %d): %s", record.offset, exc)

    def _keep(self, experiment: Experiment) -> None:
        with self._lock:
            self._definitions[experiment.experiment_id] = experiment

    @property
    def ready(self) -> bool:
        return self._writer is not None

    def check_ready(self) -> None:
        """A 503 until the topic has been read to its end (a listing would be incomplete)."""
        if not self.ready:
            raise DeliveryError(self.settings.experiments_topic, "the service is not connected to Kafka yet")

    def get(self, experiment_id: str) -> Experiment | None:
        with self._lock:
            return self._definitions.get(experiment_id)

    def all(self) -> list[Experiment]:
        with self._lock:
            return sorted(self._definitions.values(), key=lambda e: (e.created_ms, e.experiment_id))

    async def publish(self, experiment: Experiment, timeout: float) -> None:
        topic = self.settings.experiments_topic
        if self._writer is None:
            raise DeliveryError(topic, "the service is not connected to Kafka")
        try:
            future = self._writer.send(experiment.experiment_id, experiment.to_bytes())
            await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except TimeoutError:
            raise DeliveryError(topic, f"no acknowledgement within {timeout:g}s") from None
        except EventTopicError as exc:
            raise DeliveryError(topic, exc.reason) from None
        self._keep(experiment)

    def close(self) -> None:
        if self._follower is not None:
            self._follower.close()
        if self._writer is not None:
            self._writer.close()


def experiment_out(experiment: Experiment) -> ExperimentOut:
    return ExperimentOut(
        id=experiment.experiment_id,
        name=experiment.name,
        arms=list(experiment.arms),
        description=experiment.description,
        metadata=dict(experiment.metadata),
        created_at=iso_ms(experiment.created_ms),
        created_at_ms=experiment.created_ms,
    )


ExperimentPath = Annotated[str, Path(min_length=1, max_length=ID_MAX)]


def add_experiment_routes(app: FastAPI, state: ServiceState, catalog: ExperimentCatalog) -> None:
    """The routes on ``/v1/experiments``, tagged ``experiments``."""

    @app.post(EXPERIMENTS_PATH, status_code=201, response_model=ExperimentOut, responses=ERRORS, tags=["experiments"])
    async def create_experiment(body: ExperimentCreate, caller: Caller) -> ExperimentOut:
        """Define a comparative experiment; a repeat of an ``id`` with another definition is a 409."""
        catalog.check_ready()
        try:
            experiment = Experiment.new(
                body.name, body.arms, experiment_id=body.id, description=body.description, metadata=body.metadata
            )
        except ValidationError as exc:
            raise RefusedError(422, "invalid_experiment", str(exc), exc.field) from None
        existing = catalog.get(experiment.experiment_id)
        if existing is not None:
            same = (existing.name, existing.arms, existing.description, existing.metadata) == (
                experiment.name, experiment.arms, experiment.description, experiment.metadata
            )  # fmt: skip
            if same:
                return experiment_out(existing)
            raise RefusedError(
                409, "experiment_exists", f"id: experiment {experiment.experiment_id!r} exists with another definition",
                "id",
            )  # fmt: skip
        await catalog.publish(experiment, state.config.ack_timeout)
        log.info("defined experiment %s (%s) for %s", experiment.experiment_id, ", ".join(experiment.arms), caller)
        return experiment_out(experiment)

    @app.get(EXPERIMENTS_PATH, response_model=ExperimentList, responses=ERRORS, tags=["experiments"])
    async def list_experiments(caller: Caller) -> ExperimentList:
        """Every experiment defined so far, oldest first (the body ``prefpair report --experiments`` reads)."""
        catalog.check_ready()
        return ExperimentList(items=[experiment_out(e) for e in catalog.all()])

    @app.get(EXPERIMENTS_PATH + "/{experiment_id}", response_model=ExperimentOut, responses=ERRORS,
             tags=["experiments"])  # fmt: skip
    async def get_experiment(experiment_id: ExperimentPath, caller: Caller) -> ExperimentOut:
        """One experiment's definition."""
        catalog.check_ready()
        experiment = catalog.get(experiment_id)
        if experiment is None:
            raise RefusedError(404, "experiment_not_found", f"experiment {experiment_id!r} is not defined")
        return experiment_out(experiment)
