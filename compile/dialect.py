"""The compile stages' DuckDB SQL as Spark SQL: the dialect layer of the Spark engine.

The stages (:mod:`~prefpair.compile.resolution`, :mod:`~prefpair.compile.filters`, ...) are
written once, in DuckDB's SQL; :mod:`prefpair.compile.spark` runs the same statements on Spark
through :func:`statement`. `sqlglot <https://github.com/tobymao/sqlglot>`_ translates what is
only spelling (struct and list literals, lambdas, list functions, SEMI / ANTI joins, QUALIFY,
DuckDB's NULLS LAST default order); this module adds what a translation has to know to give
the same *values*:

- the macros of :mod:`prefpair.compile.sql` are expanded inline (Spark has no SQL macros);
- ``md5_number(s)`` is, in DuckDB, the MD5 digest as a little-endian unsigned 128-bit integer;
  Spark has no such integer, so it becomes the digest's bytes in reverse order as hex: a string
  that sorts exactly as that integer does, which is all the stages use it for (seeded order);
- ``prompt_bucket`` reads the hex prefix with ``conv`` (DuckDB casts ``'0x...'``), as a DOUBLE;
- ``round(x, n)``: DuckDB rounds the double ``x * 10^n`` half away from zero; Spark's ``round``
  rounds the exact decimal value of ``x``, which differs on rare values, so Spark gets DuckDB's
  formula;
- ``list_position`` is NULL when the item is absent (Spark's ``array_position`` says 0);
  ``len`` is a list's length (the stages call it on lists only); ``list[i]`` is 1-based and NULL
  out of range (``try_element_at``);
- ``unnest(l) AS x, generate_subscripts(l, 1) AS i`` in one SELECT (a list's items with their
  positions from 1) becomes Spark's one generator ``inline(transform(l, (x, i) -> ...))``;
- ``list(x ORDER BY x)`` becomes ``array_sort(collect_list(x))``.

Statements other than queries have no Spark SQL counterpart on temp views (Spark's temp views
cannot be updated or appended to); :func:`statement` returns them as parts
(:class:`CreateTable`, :class:`InsertInto`, :class:`Update`, :class:`DropTable`) that the
engine runs with DataFrames.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache

import sqlglot
from sqlglot import exp

from prefpair.compile.exceptions import SparkTranslationError
from prefpair.compile.sql import MACRO_BODIES

SPARK_BODIES: dict[str, tuple[tuple[str, ...], str]] = {
    "md5_number": (("s",), "array_join(reverse(regexp_extract_all(md5(s), '(..)', 1)), '')"),
    "prompt_bucket": (("prompt_id",), "CAST(conv(substr(prompt_id, 1, 8), 16, 10) AS DOUBLE) / 4294967296.0D"),
    "list_position": (("l", "x"), "nullif(array_position(l, x), 0)"),
}
"""Functions whose Spark body differs from DuckDB's (name -> (parameters, Spark SQL body))."""


@dataclass(frozen=True)
class CreateTable:
    """``CREATE [OR REPLACE] TEMP TABLE name AS query``."""

    name: str
    query: str


@dataclass(frozen=True)
class InsertInto:
    """``INSERT INTO name query``: the rows of ``query`` appended to the table."""

    name: str
    query: str


@dataclass(frozen=True)
class DropTable:
    name: str


@dataclass(frozen=True)
class Update:
    """``UPDATE table alias SET column = value FROM source WHERE condition``.

    :meth:`hits` is the query of the rows it changes: run over the table with a row id column
    added, it gives each changed row's id and new value.
    """

    table: str
    alias: str
    column: str
    value: str
    source: str
    condition: str

    def hits(self, base: str, row_id: str) -> str:
        """The ids (``row_id``) and new values (``value``) of the rows of ``base`` (the table plus ``row_id``)
        this update changes."""
        return (
            f"SELECT DISTINCT {self.alias}.{row_id} AS {row_id}, {self.value} AS value "
            f"FROM {base} AS {self.alias} JOIN {self.source} ON {self.condition}"
        )


Statement = CreateTable | InsertInto | DropTable | Update


def statement(sql: str) -> Statement | str:
    """One DuckDB statement for Spark: a query as Spark SQL, or the parts of a table statement."""
    tree = _parse(sql)
    if isinstance(tree, exp.Create) and str(tree.args.get("kind", "")).upper() == "TABLE":
        return CreateTable(tree.this.name, _spark(tree.expression))
    if isinstance(tree, exp.Insert):
        return InsertInto(tree.this.name, _spark(tree.expression))
    if isinstance(tree, exp.Drop) and str(tree.args.get("kind", "")).upper() == "TABLE":
        dropped = tree.find(exp.Table)
        if dropped is not None:
            return DropTable(dropped.name)
    if isinstance(tree, exp.Update):
        return _update(tree, sql)
    if isinstance(tree, exp.Query):
        return _spark(tree)
    raise SparkTranslationError(sql, f"no Spark form of a {type(tree).__name__} statement")


def query(sql: str) -> str:
    """A DuckDB query as Spark SQL."""
    translated = statement(sql)
    if not isinstance(translated, str):
        raise SparkTranslationError(sql, "expected a query")
    return translated


def _parse(sql: str) -> exp.Expr:
    try:
        tree = sqlglot.parse_one(sql, read="duckdb")
    except sqlglot.errors.ParseError as exc:
        raise SparkTranslationError(sql, str(exc)) from None
    return tree


def _update(tree: exp.Update, sql: str) -> Update:
    table = tree.this
    assignments = tree.expressions
    source = tree.args.get("from_")
    where = tree.args.get("where")
    if len(assignments) != 1 or not isinstance(assignments[0], exp.EQ) or source is None or where is None:
        raise SparkTranslationError(sql, "an UPDATE needs one SET column, a FROM and a WHERE")
    target, value = assignments[0].this, assignments[0].expression
    return Update(
        table=table.name,
        alias=table.alias or table.name,
        column=target.name,
        value=_spark(value),
        source=_spark(source.this),
        condition=_spark(where.this),
    )


def _spark(tree: exp.Expr) -> str:
    """A DuckDB expression tree as Spark SQL text (the tree is copied, not changed)."""
    tree = _expand_macros(tree.copy())
    for rewrite in _REWRITES:
        tree = tree.transform(rewrite, copy=False)
    return tree.sql(dialect="spark")


# ---------------------------------------------------------------------------- macros
@cache
def _bodies() -> Mapping[str, tuple[tuple[str, ...], exp.Expr]]:
    """Every macro and Spark body, parsed (DuckDB bodies in DuckDB's dialect, Spark ones in Spark's)."""
    bodies = {name: (params, sqlglot.parse_one(body, read="duckdb")) for name, (params, body) in MACRO_BODIES.items()}
    bodies.update(
        {name: (params, sqlglot.parse_one(body, read="spark")) for name, (params, body) in SPARK_BODIES.items()}
    )
    return bodies


def _expand_macros(tree: exp.Expr) -> exp.Expr:
    """Replace each call of a macro (and of the functions of :data:`SPARK_BODIES`) by its body, until none is left."""
    bodies = _bodies()
    for _ in range(32):  # macros call macros; never this deep
        calls = [node for node in tree.find_all(exp.Anonymous) if node.name.lower() in bodies]
        if not calls:
            return tree
        for call in calls:
            params, body = bodies[call.name.lower()]
            if len(call.expressions) != len(params):
                raise SparkTranslationError(call.sql("duckdb"), f"{call.name} takes {len(params)} arguments")
            expanded = _substitute(body.copy(), dict(zip(params, call.expressions, strict=True)))
            if call is tree:
                tree = expanded
            else:
                call.replace(exp.Paren(this=expanded))
    raise SparkTranslationError(tree.sql("duckdb"), "macros nest too deep")


def _substitute(body: exp.Expr, arguments: Mapping[str, exp.Expr]) -> exp.Expr:
    """``body`` with its parameters replaced: ``p`` by the argument, ``p.field`` by the argument's field."""

    def replace(node: exp.Expr) -> exp.Expr:
        if isinstance(node, exp.Column) and not node.args.get("db"):
            if not node.table and node.name in arguments:
                return arguments[node.name].copy()
            if node.table in arguments:
                return exp.Dot(this=arguments[node.table].copy(), expression=exp.to_identifier(node.name))
        return node

    return body.transform(replace, copy=False)


# ---------------------------------------------------------------------------- rewrites
ROUND_EXACT = (
    "(CASE WHEN __x * {p} > floor(__x * {p}) + 0.5D OR (__x * {p} = floor(__x * {p}) + 0.5D AND "
    "((__x * 134217729.0D - (__x * 134217729.0D - __x)) * {p} - __x * {p}) "
    "+ (__x - (__x * 134217729.0D - (__x * 134217729.0D - __x))) * {p} > 0) "
    "THEN floor(__x * {p}) + 1 ELSE floor(__x * {p}) END) / {p}"
)
"""``round(__x, n)`` of a double as DuckDB computes it: to the nearest multiple of 10^-n of the double's
*exact* value (Spark's ``round`` rounds its shortest decimal spelling half up: 0.1234565 is a tie to
Spark, and below it to DuckDB). ``p = fl(x * 10^n)`` is off the exact product by ``e``, which
Dekker's product (Veltkamp's split of x; 10^n needs no split) gives exactly; the result is
``floor(p)`` or the next integer, by the side of ``floor(p) + 0.5`` that ``p + e`` is on."""


def _round(node: exp.Expr) -> exp.Expr:
    """``round(x, n)`` of a double: :data:`ROUND_EXACT`."""
    if isinstance(node, exp.Round) and node.args.get("decimals") is not None:
        decimals = node.args["decimals"]
        if not (isinstance(decimals, exp.Literal) and decimals.is_int and 1 <= int(decimals.name) <= 7):
            raise SparkTranslationError(node.sql("duckdb"), "round() needs a constant 1 to 7 decimals")
        # x is bound once, as a lambda's argument: the formula names it seven times
        rounding = ROUND_EXACT.format(p=f"{10 ** int(decimals.name)}.0D")
        template = sqlglot.parse_one(f"element_at(transform(array(__value), __x -> {rounding}), 1)", read="spark")
        value: exp.Expr = node.this

        def bind(n: exp.Expr) -> exp.Expr:
            return value.copy() if isinstance(n, exp.Column) and n.name == "__value" else n

        return template.transform(bind, copy=False)
    return node


def _list_length(node: exp.Expr) -> exp.Expr:
    """``len(list)``: Spark's ``size`` (``length`` is a string's)."""
    if isinstance(node, exp.Length):
        return exp.Anonymous(this="size", expressions=[node.this])
    return node


def _list_index(node: exp.Expr) -> exp.Expr:
    """``l[i]``: 1-based, NULL out of range."""
    if isinstance(node, exp.Bracket) and len(node.expressions) == 1:
        return exp.Anonymous(this="try_element_at", expressions=[node.this, node.expressions[0]])
    return node


def _sorted_list(node: exp.Expr) -> exp.Expr:
    """``list(x ORDER BY x)``: the collected values, sorted."""
    if isinstance(node, exp.ArrayAgg) and isinstance(node.this, exp.Order):
        value, order = node.this.this, node.this.expressions
        if len(order) != 1 or order[0].this != value or order[0].args.get("desc"):
            raise SparkTranslationError(node.sql("duckdb"), "list() may only be ordered by its own value, ascending")
        return exp.Anonymous(
            this="array_sort", expressions=[exp.Anonymous(this="collect_list", expressions=[value.copy()])]
        )
    return node


def _overlaps(node: exp.Expr) -> exp.Expr:
    """``list_has_any(a, b)``: Spark's ``arrays_overlap``."""
    if isinstance(node, exp.ArrayOverlaps):
        return exp.Anonymous(this="arrays_overlap", expressions=[node.this, node.expression])
    return node


def _indexed_unnest(node: exp.Expr) -> exp.Expr:
    """``unnest(l) AS x, generate_subscripts(l, 1) AS i`` in a SELECT: ``inline(transform(l, (x, i) -> ...))``."""
    if not isinstance(node, exp.Select):
        return node
    items = {
        str(e.this.this.sql("duckdb")): e
        for e in node.expressions
        if isinstance(e, exp.Alias) and isinstance(e.this, exp.Explode)
    }
    for position in [
        e
        for e in node.expressions
        if isinstance(e, exp.Alias) and isinstance(e.this, exp.Anonymous) and e.this.name == "generate_subscripts"
    ]:
        listed, dimension = position.this.expressions
        item = items.get(listed.sql("duckdb"))
        if item is None or dimension.sql() != "1":
            raise SparkTranslationError(node.sql("duckdb"), "generate_subscripts() needs unnest() of its list beside")
        generator = sqlglot.parse_one(
            f"inline(transform(__list, (__item, __pos) -> named_struct('{item.alias}', __item, "
            f"'{position.alias}', __pos + 1)))",
            read="spark",
        )
        generator = generator.transform(
            lambda n, listed=listed: listed.copy() if isinstance(n, exp.Column) and n.name == "__list" else n
        )
        item.replace(generator)
        position.pop()
    return node


_REWRITES: tuple[Callable[[exp.Expr], exp.Expr], ...] = (
    _indexed_unnest,
    _round,
    _list_length,
    _list_index,
    _sorted_list,
    _overlaps,
)
