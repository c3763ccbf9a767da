"""The benchmark's traffic: the one simulation (:mod:`prefpair.simulate`) shaped as the issue asks.

Every request has a ~1 KB prompt and two ~1 KB candidates. Nothing malformed and no lost
inferences unless a section asks: each section sizes the traffic it measures.
"""

from __future__ import annotations

from typing import Any

from prefpair.simulate import APP_USER, HUMAN_ANNOTATOR, REWARD_MODEL, Traffic, TrafficSpec

DAY_S = 86_400


def traffic(requests: int, seed: int, *, per_second: float = 1.0, **spec: Any) -> Traffic:
    """``requests`` requests arriving ``per_second`` (event time), each judged once by an end user
    unless ``spec`` (TrafficSpec fields) says otherwise."""
    shape: dict[str, Any] = {
        "requests": requests,
        "seed": seed,
        "days": requests / per_second / DAY_S,
        "min_candidates": 2,
        "max_candidates": 2,
        "prompt_chars": 1000,
        "candidate_chars": 1000,
        "length_spread": 0.0,
        "chat_share": 0.0,
        "source_shares": {APP_USER: 1.0},
        "user_thumbs_share": 0.0,
        "update_share": 0.0,
        "delete_share": 0.0,
        "early_feedback_share": 0.0,
        "orphans": 0,
        "malformed": 0,
    }
    return Traffic(TrafficSpec(**{**shape, **spec}))


def inferences(requests: int, seed: int) -> Traffic:
    """Requests and no feedback."""
    return traffic(requests, seed, source_shares={})


def compile_log(requests: int, seed: int) -> Traffic:
    """Mostly one end-user pick per request, with ties, both-bad, thumbs, corrections, rankings,
    reward scores, updates and deletes mixed in, so every compile stage has work to do."""
    return traffic(
        requests,
        seed,
        length_spread=0.2,
        source_shares={APP_USER: 0.9, HUMAN_ANNOTATOR: 0.05, REWARD_MODEL: 0.03},
        disjoint_sources=True,
        user_thumbs_share=0.06,
        correction_share=0.5,
        tie_share=0.02,
        both_bad_share=0.02,
        second_annotator_share=0.0,
        update_share=0.02,
        delete_share=0.01,
    )
