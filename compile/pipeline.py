"""The compile as DuckDB SQL over the committed Parquet log: the stages in order, and their drops.

Stages, in order (each keeps its rows in a temp table; drops are rows with a ``reason``):

1. **events**: the narrow feedback columns of joined and orphaned feedback (an event seen twice
   changes nothing: resolution picks one of two equal rows).
2. **resolution** (:mod:`prefpair.schemas.resolution`, shared with the service and the report):
   per ``feedback_id``, events in (timestamp, partition, offset) order. The judgment is live
   when its latest CREATE comes after its latest DELETE; its fields are the latest CREATE's,
   overlaid by the non-null fields of each later UPDATE (a null keeps the earlier value).
   Deleted ones and UPDATEs without a CREATE are drops.
   Implicit signals become judgments here too (:mod:`~prefpair.compile.implicit`, by its rules).
3. **context**: one wide read of the rows that carry each request's inference (prompt, system
   prompt, messages, candidates...); feedback whose inference never landed is joined to the
   inference table when it arrived later, else dropped as ``no_inference``.
4. **filters** on judgments (time, source type, key, environment, user, tags).
5. **derivation** of (chosen, rejected) pairs: pairwise PREFERRED; rankings (all pairs or best
   against worst); scores of one key and one scorer on candidates of a request (the mean per
   candidate, difference >= ``min_margin`` and > 0); corrections (the correction against the
   candidate it corrects). Ties and both-bad give no pair. Each pair's ``margin`` is the
   strength of its preference in [0, 1] times ``margin_scale`` (the rule per derivation is the
   ``include_margin`` description in :mod:`prefpair.compile.config`).
6. **validation** per pair: unknown candidate, model filters, margin, empty, identical.
7. **cleaning**: contradictions on one prompt and pair of outputs (policy), exact duplicates.
8. **sampling** (seeded): an informative strategy if asked (:mod:`~prefpair.compile.informative`:
   uncertain, disagreement, coverage, inverse-propensity weights), then cap per prompt, position
   balance, total cap; stratified round-robin.
9. **split** by prompt hash; **incremental**: pairs emitted by earlier runs are left out.

Pair ids hash content (prompt, chosen text, rejected text), so a duplicate is the same id.

Each stage is a function of a :class:`~prefpair.compile.workspace.Workspace` (the connection,
the inputs and the counts): 1-3 in :mod:`~prefpair.compile.resolution`, 4 and 7 in
:mod:`~prefpair.compile.filters`, 5-6 in :mod:`~prefpair.compile.derivation`, 8-9 in
:mod:`~prefpair.compile.sampling`, the unpaired (KTO) examples in :mod:`~prefpair.compile.unpaired`;
the SQL they share (literals, macros) in :mod:`~prefpair.compile.sql`.

The SQL is DuckDB's; the Spark engine (:mod:`~prefpair.compile.spark`) runs the same stages, their
statements translated by :mod:`~prefpair.compile.dialect`. A stage reads and counts through its
workspace (``execute``, ``rows``, ``scalar``), never through the connection itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

from prefpair.compile import derivation, filters, implicit, informative, resolution, sampling, unpaired
from prefpair.compile.workspace import Workspace

log = logging.getLogger(__name__)

# Drop reasons in the order the stages apply them (the manifest lists them in this order).
DROP_REASONS = (
    "deleted",
    "update_without_create",
    "no_inference",
    "filtered_time",
    "filtered_source_type",
    "explicit_left_out",
    "filtered_key",
    "filtered_environment",
    "filtered_user",
    "filtered_tag",
    "tie",
    "both_bad",
    "incomplete",
    "unknown_candidate",
    "filtered_model",
    "filtered_model_version",
    "below_min_margin",
    "empty",
    "identical",
    "contradictory",
    "duplicate",
    "not_informative",
    "ipw_resampled",
    "cap_per_prompt",
    "position_balance",
    "max_pairs",
)


class Pipeline(Workspace):
    """Runs the stages on one DuckDB connection; counts land in ``stage_counts`` / ``drop_counts``."""

    def run(self) -> None:
        with self._stage("events"):
            resolution.events(self)
        with self._stage("resolution"):
            resolution.resolve(self)
        with self._stage("implicit"):
            implicit.add_judgments(self)
        with self._stage("context"):
            resolution.context(self)
        with self._stage("filters"):
            filters.filter_judgments(self)
        with self._stage("derivation"):
            derivation.derive(self)
            implicit.weigh(self)
        with self._stage("validation"):
            derivation.validate(self)
        with self._stage("cleaning"):
            filters.clean(self)
        with self._stage("sampling"):
            informative.sample(self)
            sampling.sample(self)
        with self._stage("selection"):
            sampling.select(self)
            implicit.finish(self)
        if "trl_unpaired" in self.config.formats:
            with self._stage("unpaired"):
                unpaired.unpaired(self)

    @property
    def drop_counts(self) -> dict[str, int]:
        return {r: self.drops[r] for r in DROP_REASONS if self.drops.get(r)}

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        yield
        log.info("compile: %s done in %.1f s", name, time.monotonic() - started)
