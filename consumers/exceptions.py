"""Errors of the consumer daemon; each keeps what it was about."""

from __future__ import annotations

from pathlib import Path

from prefpair.errors import PrefpairError


class ConsumerError(PrefpairError):
    """Base class of consumer daemon errors."""


class SegmentCommitError(ConsumerError):
    """A segment could not be made durable; the offsets it covers are not committed."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot commit log segment {path}: {reason}")


class DeadLetterError(ConsumerError):
    """A dead letter was not acknowledged by the broker; the segment holding its offset is not committed."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"dead-letter topic {topic}: {reason}")


class CorruptStateError(ConsumerError):
    """A committed segment's state.json cannot be read: the resume point is unknown."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"unreadable segment state {path}: {reason}")


class LogWriteError(ConsumerError):
    """The operating system refused a segment write (disk full, read-only, permissions).

    Nothing of the segment was committed, nor its offsets; a restart with room to write resumes
    from the last committed segment.
    """

    def __init__(self, path: Path | str, error: OSError) -> None:
        self.path = path
        self.error = error
        super().__init__(f"cannot write log segment {path}: {error.strerror or error}")
