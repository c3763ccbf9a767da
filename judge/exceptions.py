"""Errors of ``prefpair judge``; each keeps what it was about (a field, a request, an answer)."""

from __future__ import annotations

from prefpair.errors import ConfigError, PrefpairError

ANSWER_SHOWN = 300
"""Characters of an unparseable answer quoted in its error."""


class JudgeError(PrefpairError):
    """Base class of the judge's errors."""


class JudgeConfigError(JudgeError, ConfigError):
    """A judge option is malformed, or options that cannot go together were given.

    A :class:`~prefpair.errors.ConfigError` too (``field``, ``reason``), so one ``except ConfigError``
    catches a bad setting of any area.
    """

    def __init__(self, field: str, reason: str) -> None:
        ConfigError.__init__(self, field, reason)


class EvaluatorLoadError(JudgeError):
    """``--evaluator`` names no entry point of ``prefpair.judges`` and no importable ``module:function``."""

    def __init__(self, spec: str, reason: str) -> None:
        self.spec = spec
        self.reason = reason
        super().__init__(f"evaluator {spec!r}: {reason}")


class EvaluatorFailedError(JudgeError):
    """A Python evaluator raised while answering a question (its exception is the cause)."""

    def __init__(self, evaluator: str, request_id: str, order: tuple[str, ...], error: BaseException) -> None:
        self.evaluator = evaluator
        self.request_id = request_id
        self.order = order
        self.error = error
        super().__init__(
            f"evaluator {evaluator!r} failed on request {request_id!r} (candidates shown as {', '.join(order)}): "
            f"{type(error).__name__}: {error}"
        )


class UnparseableAnswerError(JudgeError):
    """The evaluator's answer to one question is not the JSON the question asked for.

    Keeps the request, the presentation order asked (``order``: candidate ids as shown), what was
    wrong (``reason``) and the raw answer (quoted, shortened, in the message).
    """

    def __init__(self, request_id: str, order: tuple[str, ...], reason: str, answer: str) -> None:
        self.request_id = request_id
        self.order = order
        self.reason = reason
        self.answer = answer
        shown = answer if len(answer) <= ANSWER_SHOWN else answer[:ANSWER_SHOWN] + "..."
        super().__init__(
            f"unparseable judge answer for request {request_id!r} (candidates shown as {', '.join(order)}): "
            f"{reason}; the answer was {shown!r}"
        )


class EndpointError(JudgeError):
    """The chat-completions endpoint failed for good: a refusal (4xx other than 429), or retries ran out."""

    def __init__(self, url: str, reason: str, *, status: int | None = None, attempts: int = 1) -> None:
        self.url = url
        self.reason = reason
        self.status = status
        self.attempts = attempts
        code = f"HTTP {status}" if status is not None else "no answer"
        super().__init__(f"{url}: {code} after {attempts} attempt(s): {reason}")


class RunStateError(JudgeError):
    """The run directory holds a state this run cannot continue (another judge definition, a lock held)."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class NoInferencesError(JudgeError):
    """The log holds no committed inference the selection keeps."""

    def __init__(self, log: str, reason: str) -> None:
        self.log = log
        self.reason = reason
        super().__init__(f"{log}: {reason}")
