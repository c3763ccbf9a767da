"""Errors of the traffic simulation; each names what it was about and why."""

from __future__ import annotations

from prefpair.errors import ConfigError, PrefpairError


class SimulationError(PrefpairError):
    """Base class of the simulation's errors."""


class TrafficSpecError(SimulationError, ConfigError):
    """A knob of :class:`~prefpair.simulate.TrafficSpec` is out of range or contradicts another.

    A :class:`~prefpair.errors.ConfigError` too (``field``, ``reason``), so one ``except ConfigError``
    catches a bad setting of any area.
    """

    def __init__(self, field: str, reason: str) -> None:
        ConfigError.__init__(self, field, reason)


class LogInputError(SimulationError):
    """A log sink or the log builder got an argument it cannot use (e.g. feedback for an unknown request)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")
