"""The wire contract: Avro schemas (the ``.avsc`` files beside this module are the source of
truth), the pydantic models that mirror them, the message framing, and the Parquet log layout."""

from prefpair.schemas.exceptions import (
    BadMagicError,
    ContractError,
    DecodeError,
    UnknownSchemaError,
    ValidationError,
)
from prefpair.schemas.models import (
    Candidate,
    FeedbackCategory,
    FeedbackConfig,
    FeedbackEvent,
    FeedbackOp,
    FeedbackSource,
    FeedbackType,
    InferenceEvent,
    JudgmentKind,
    Message,
    PairwiseOutcome,
    SignalEvent,
    SourceType,
)

__all__ = [
    "BadMagicError",
    "Candidate",
    "ContractError",
    "DecodeError",
    "FeedbackCategory",
    "FeedbackConfig",
    "FeedbackEvent",
    "FeedbackOp",
    "FeedbackSource",
    "FeedbackType",
    "InferenceEvent",
    "JudgmentKind",
    "Message",
    "PairwiseOutcome",
    "SignalEvent",
    "SourceType",
    "UnknownSchemaError",
    "ValidationError",
]
