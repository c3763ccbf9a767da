"""Names in a compiled dataset's folder that more than one area reads: the compile writes them
(:mod:`prefpair.compile.output`), the report recognizes them (:mod:`prefpair.report.dataset`)."""

MANIFEST = "manifest.json"
"""At the root of every compiled dataset: inputs, config, counts and file hashes."""

PUBLISHED = "published"
"""Beside ``data/`` in an output on object storage: the pointers to the datasets a compile published."""
