"""A deterministic judge shipped with prefpair (entry point ``length``): the longer answer is the better one.

It needs no network and no model, so the demo and the tests can run a judge end to end; it also
shows the shape of a Python evaluator: a function of a :class:`~prefpair.judge.questions.Question`
returning the JSON object the question asks for. Length is a weak judge of quality; use it to see
the machinery, not to build a dataset.
"""

from __future__ import annotations

from typing import Any

from prefpair.judge.questions import BOTH_BAD, TIE, Question

SATURATION = 1000
"""Characters at which the score judge gives the top score."""


def longer_is_better(question: Question) -> dict[str, Any]:
    """Pairwise: the longer answer wins (a tie when equal, both_bad when both are empty); score: length
    scaled onto the range; ranking: longest first, equal lengths tied."""
    lengths = [len(r.text.strip()) for r in question.responses]
    labels = question.labels
    if question.kind == "pairwise":
        if lengths[0] == lengths[1]:
            return {"winner": BOTH_BAD if lengths[0] == 0 else TIE, "reason": "equal lengths"}
        winner = labels[0] if lengths[0] > lengths[1] else labels[1]
        return {"winner": winner, "reason": f"{winner} is longer"}
    if question.kind == "score":
        low, high = question.score_range
        return {"score": round(low + (high - low) * min(1.0, lengths[0] / SATURATION), 3)}
    ranking: list[list[str]] = []
    for length in sorted(set(lengths), reverse=True):
        ranking.append([label for label, n in zip(labels, lengths, strict=True) if n == length])
    return {"ranking": ranking}
