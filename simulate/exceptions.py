"""Errors of the traffic simulation; each names what it was about and why."""

from __future__ import annotations

from prefpair.errors import PrefpairError


class SimulationError(PrefpairError):
    """Base class of the simulation's errors."""


class TrafficSpecError(SimulationError):
    """A knob of :class:`~prefpair.simulate.TrafficSpec` is out of range or contradicts another."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class LogInputError(SimulationError):
    """A log sink or the log builder got an argument it cannot use (e.g. feedback for an unknown request)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")
