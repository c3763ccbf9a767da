"""``prefpair experiments create|list``: define comparative experiments and list them from the command line.

An experiment names the models (arms) compared side by side; its definition is one event on the
experiments topic (``--experiments-topic``), the same one the SDK (``PreferenceLogger.create_experiment``)
and the service (``POST /v1/experiments``) write. Judgments join it by carrying its id: feedback's
``experiment_id``, or ``prefpair judge --experiment-id ID``. ``prefpair report`` then gives it a
head-to-head section with a winner statement.

``create`` prints the definition as JSON (its id is what judgments carry); ``list`` prints one line
per experiment, or with ``--json`` a JSON list that ``prefpair report --experiments FILE`` reads.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from prefpair.config import Settings
from prefpair.errors import ConfigError
from prefpair.flags import Flags
from prefpair.producers.experiments import DEFAULT_TIMEOUT, list_experiments, publish_experiment
from prefpair.schemas.exceptions import ValidationError
from prefpair.schemas.experiments import Experiment


class ExperimentCreate(BaseModel):
    """What ``prefpair experiments create`` defines. Name and arms are required when it runs (checked
    by :meth:`experiment`, so each option loads on its own)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = Field(default=None, description="name of the experiment (required)")
    arms: tuple[str, ...] = Field(
        default=(),
        description="a model compared, `name` or `name:version` as the report labels models (at least two)",
        json_schema_extra={"flag": "--arm", "metavar": "MODEL"},
    )
    experiment_id: str | None = Field(
        default=None,
        description="id of the experiment (default: a fresh random id); an id defined already is accepted again "
        "with the same definition only",
        json_schema_extra={"flag": "--id", "metavar": "ID"},
    )
    description: str | None = Field(default=None, description="what the experiment is for")
    metadata: dict[str, str] = Field(default_factory=dict, description="labels of the experiment")

    def experiment(self) -> Experiment:
        """The definition to store; a ConfigError naming the flag when it is incomplete or invalid."""
        if self.name is None:
            raise ConfigError("name", "give the experiment a name", source="--name")
        try:
            return Experiment.new(self.name, self.arms, experiment_id=self.experiment_id,
                                  description=self.description, metadata=self.metadata)  # fmt: skip
        except ValidationError as exc:
            flag = {"arms": "--arm", "experiment_id": "--id"}.get(exc.field, f"--{exc.field.replace('_', '-')}")
            raise ConfigError(exc.field, exc.reason, source=flag) from None


class ExperimentsCommand(BaseModel):
    """Options of ``prefpair experiments create|list`` besides the settings."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    json_output: bool = Field(
        default=False,
        description="list: print a JSON list of the definitions (what `prefpair report --experiments FILE` reads)",
        json_schema_extra={"flag": "--json"},
    )
    timeout: float = Field(default=DEFAULT_TIMEOUT, gt=0, description="seconds to wait for the cluster")


CREATE_FLAGS = Flags(ExperimentCreate, env_prefix=None)  # a definition, not a setting: no variables
EXPERIMENTS_FLAGS = Flags(ExperimentsCommand, env_prefix=None)


def register(subparsers: Any) -> None:
    """Add ``prefpair experiments create|list``."""
    parser = subparsers.add_parser(
        "experiments",
        help="define comparative experiments (models compared head to head) and list them",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="experiments_command", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="define an experiment: a name and the models it compares; prints its definition as JSON",
        epilog="Example: prefpair experiments create --name 'large vs small' --arm chat-large --arm chat-small",
    )
    CREATE_FLAGS.add_arguments(create)
    EXPERIMENTS_FLAGS.add_arguments(create, only=("timeout",))
    create.set_defaults(func=create_command)
    listing = actions.add_parser("list", help="list the experiments defined so far, oldest first")
    EXPERIMENTS_FLAGS.add_arguments(listing)
    listing.set_defaults(func=list_command)


def create_command(args: argparse.Namespace, settings: Settings) -> int:
    experiment = CREATE_FLAGS.load(args).experiment()  # checked before anything is sent
    timeout = EXPERIMENTS_FLAGS.load(args).timeout
    existing = _defined(settings, experiment, timeout) if CREATE_FLAGS.load(args).experiment_id else None
    stored = existing or publish_experiment(settings, experiment, timeout)
    print(json.dumps(stored.model_dump(mode="json"), sort_keys=True))
    return 0


def _defined(settings: Settings, experiment: Experiment, timeout: float) -> Experiment | None:
    """The stored definition of ``experiment``'s id when it is the same one (a repeat changes nothing);
    a ConfigError when the id is defined otherwise (as ``POST /v1/experiments`` answers 409)."""
    found = {e.experiment_id: e for e in list_experiments(settings, timeout)}.get(experiment.experiment_id)
    if found is None:
        return None
    fields = ("name", "arms", "description", "metadata")
    if any(getattr(found, name) != getattr(experiment, name) for name in fields):
        raise ConfigError("experiment_id", f"experiment {experiment.experiment_id!r} exists with another definition",
                          source="--id")  # fmt: skip
    return found


def list_command(args: argparse.Namespace, settings: Settings) -> int:
    options = EXPERIMENTS_FLAGS.load(args)
    found = list_experiments(settings, options.timeout)
    if options.json_output:
        print(json.dumps([e.model_dump(mode="json") for e in found], indent=2, sort_keys=True))
        return 0
    for e in found:
        created = datetime.fromtimestamp(e.created_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        print(f"{e.experiment_id}\t{e.name}\t{' vs '.join(e.arms)}\t{created}")
    return 0
