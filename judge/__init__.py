"""``prefpair judge``: evaluators (Python callables or an OpenAI-compatible API) run over logged
inferences, their judgments written as feedback through the producer SDK, once each.

Layering: above the areas (it reads the log as compile does and writes through
:mod:`prefpair.producers`), below the simulation and the command line.
"""

from prefpair.judge.config import JUDGE_FLAGS, JudgeConfig, JudgeSelection
from prefpair.judge.endpoint import DEFAULT_TEMPLATES, HttpEvaluator
from prefpair.judge.evaluators import ENTRY_POINT_GROUP, CallableEvaluator, Evaluator, RateLimiter, load_function
from prefpair.judge.examples import longer_is_better
from prefpair.judge.exceptions import (
    EndpointError,
    EvaluatorFailedError,
    EvaluatorLoadError,
    JudgeConfigError,
    JudgeError,
    NoInferencesError,
    RunStateError,
    UnparseableAnswerError,
)
from prefpair.judge.questions import Question, Reply, Verdict, feedback_id, parse_verdict
from prefpair.judge.run import JudgeSummary, run_judge

__all__ = [
    "DEFAULT_TEMPLATES",
    "ENTRY_POINT_GROUP",
    "JUDGE_FLAGS",
    "CallableEvaluator",
    "EndpointError",
    "Evaluator",
    "EvaluatorFailedError",
    "EvaluatorLoadError",
    "HttpEvaluator",
    "JudgeConfig",
    "JudgeConfigError",
    "JudgeError",
    "JudgeSelection",
    "JudgeSummary",
    "NoInferencesError",
    "Question",
    "RateLimiter",
    "Reply",
    "RunStateError",
    "UnparseableAnswerError",
    "Verdict",
    "feedback_id",
    "load_function",
    "longer_is_better",
    "parse_verdict",
    "run_judge",
]
