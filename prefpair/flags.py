"""Command-line flags and ``PREFPAIR_*`` variables, derived from the fields of a config model.

Every command builds its config objects one way: each field of a frozen pydantic model is a flag
(``grace_ms`` -> ``--grace-ms``) and an environment variable (prefix + ``GRACE_MS``, e.g.
``PREFPAIR_CONSUMER_GRACE_MS``). The help text is the field's description with the variable and
the default beside it; Literal and Enum types give choices (matched ignoring case), booleans give
``--x/--no-x``, tuples give repeatable flags that also take comma lists (``--tag a --tag b`` or
``--tag a,b``), dicts give repeatable ``KEY=VALUE`` flags, and fields of a nested model are flags
of their own. Values merge flags > environment > defaults and the model validates them; a bad
value becomes one :class:`~prefpair.errors.ConfigError` naming the flag or variable it came from.

Overrides, per field in ``Field(json_schema_extra={...})``, used sparingly to keep existing
spellings: ``"flag"`` (another flag, or None: environment only), ``"env"`` (another variable, or
None: flag only), ``"metavar"``. In the environment, lists and dicts are comma separated
(``train=0.9,test=0.1``), and an empty variable means None for a field that may be None.
"""

from __future__ import annotations

import argparse
import enum
import os
import types
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from prefpair.errors import ConfigError, first_problem

M = TypeVar("M", bound=BaseModel)
Kind = Literal["scalar", "bool", "list", "dict"]
Container = argparse.ArgumentParser | argparse._ArgumentGroup

_LISTS = {tuple, list, set, frozenset}
_DICTS = {dict}


@dataclass(frozen=True)
class Option:
    """One field of a config model as the command line and the environment see it."""

    path: str
    """The field, dotted for a field of a nested model (``filters.since_ms``)."""
    flag: str | None
    env: str | None
    kind: Kind
    choices: tuple[str, ...] | None
    """Allowed values of a Literal or Enum field (of each item, for a list)."""
    nullable: bool
    help: str
    metavar: str | None
    dest: str
    """Where argparse keeps the value: unique per model, so two models never share one."""

    def normalized(self, value: str) -> str:
        """``value`` spelled as its choice when it matches one ignoring case (``ZSTD`` -> ``zstd``)."""
        if self.choices is None:
            return value
        matches = [choice for choice in self.choices if choice.lower() == value.strip().lower()]
        return matches[0] if len(matches) == 1 else value


class Flags(Generic[M]):
    """The flags and variables of one config model, and the loader that merges and validates them.

    ``env_prefix`` None gives flags without variables (query options such as ``feedback list``'s).
    """

    def __init__(self, model: type[M], *, env_prefix: str | None) -> None:
        self.model = model
        self.env_prefix = env_prefix
        self.options: tuple[Option, ...] = tuple(_options(model, env_prefix, model.__name__, ""))
        envs = [option.env for option in self.options if option.env]
        if len(set(envs)) != len(envs):
            raise ValueError(f"{model.__name__}: two fields read the same environment variable")

    def add_arguments(
        self, container: Container, *, only: Collection[str] | None = None, exclude: Collection[str] = ()
    ) -> None:
        """Add the flags of the fields in ``only`` (all by default; a nested model's name means all
        its fields) but not in ``exclude`` to a parser or argument group."""
        for option in self.options:
            if option.flag is None or _within(option.path, exclude):
                continue
            if only is not None and not _within(option.path, only):
                continue
            kwargs: dict[str, Any] = {"dest": option.dest, "default": argparse.SUPPRESS, "help": option.help}
            if option.kind == "bool":
                kwargs["action"] = argparse.BooleanOptionalAction
            else:
                if option.kind in ("list", "dict"):
                    kwargs["action"] = "append"
                if option.choices is not None and option.kind == "scalar":
                    kwargs["choices"] = option.choices
                    kwargs["type"] = option.normalized
                else:
                    kwargs["metavar"] = option.metavar
            container.add_argument(option.flag, **kwargs)

    # ------------------------------------------------------------------ loading
    def load(
        self, given: argparse.Namespace | Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
    ) -> M:
        """The model from ``given`` flags (parsed arguments, or a mapping of field -> value in
        which None means not given) over ``environ`` (default: the process's) over defaults."""
        values, sources = self.gather(given, os.environ if environ is None else environ)
        return self.validate(values, sources)

    def gather(
        self, given: argparse.Namespace | Mapping[str, Any] | None, environ: Mapping[str, str]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """The values given (nested like the model) and, per field path, the flag or variable
        that gave it: what :meth:`validate` needs to name the culprit of a bad value."""
        flat: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for option in self.options:
            if option.env is not None and option.env in environ:
                flat[option.path] = _from_env(option, option.env, environ[option.env])
                sources[option.path] = option.env
            if isinstance(given, argparse.Namespace):
                if hasattr(given, option.dest):
                    flat[option.path] = _from_flag(option, getattr(given, option.dest))
                    sources[option.path] = option.flag or option.path
            elif given is not None and given.get(option.path) is not None:
                flat[option.path] = given[option.path]
                sources.pop(option.path, None)
        return _nest(flat), sources

    def validate(self, values: Mapping[str, Any], sources: Mapping[str, str]) -> M:
        """``values`` as the model; a pydantic error becomes a ConfigError naming its source."""
        try:
            return self.model.model_validate(values)
        except ValidationError as exc:
            field, reason = first_problem(exc, self.model.__name__, indices=False)
            raise ConfigError(field, reason.removeprefix("Value error, "), source=_source(field, sources)) from None


# ---------------------------------------------------------------------------- deriving options
def _options(model: type[BaseModel], env_prefix: str | None, key: str, prefix: str) -> Iterator[Option]:
    for name, info in model.model_fields.items():
        annotation, nullable = _strip_none(info.annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _options(annotation, env_prefix, key, f"{prefix}{name}.")
            continue
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        flag = extra.get("flag", "--" + name.replace("_", "-"))
        env = extra.get("env", None if env_prefix is None else env_prefix + name.upper())
        kind, choices = _kind(annotation)
        metavar = extra.get("metavar") or _metavar(kind, flag, name)
        path = prefix + name
        yield Option(
            path=path,
            flag=str(flag) if flag is not None else None,
            env=str(env) if env is not None else None,
            kind=kind,
            choices=choices,
            nullable=nullable,
            help=_help(info, kind, choices, None if env is None else str(env)),
            metavar=str(metavar),
            dest=f"{key}.{path}",
        )


def _strip_none(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); a union of several types stays a union (validated as given)."""
    if get_origin(annotation) in (Union, types.UnionType):
        members = [member for member in get_args(annotation) if member is not type(None)]
        nullable = len(members) < len(get_args(annotation))
        return (members[0] if len(members) == 1 else Union[tuple(members)]), nullable  # noqa: UP007
    return annotation, False


def _kind(annotation: Any) -> tuple[Kind, tuple[str, ...] | None]:
    origin = get_origin(annotation)
    if annotation is bool:
        return "bool", None
    if annotation in _LISTS or origin in _LISTS:
        args = get_args(annotation)
        return "list", _choices(args[0]) if args else None
    if annotation in _DICTS or origin in _DICTS or origin is Mapping:
        return "dict", None
    return "scalar", _choices(annotation)


def _choices(annotation: Any) -> tuple[str, ...] | None:
    if get_origin(annotation) is Literal:
        return tuple(str(value) for value in get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return tuple(str(member.value) for member in annotation)
    return None


def _metavar(kind: Kind, flag: Any, name: str) -> str:
    if kind == "dict":
        return "KEY=VALUE"
    return str(flag or name).lstrip("-").upper().replace("-", "_")


def _help(info: FieldInfo, kind: Kind, choices: tuple[str, ...] | None, env: str | None) -> str:
    text = (info.description or "").strip()
    stop = "." if text.endswith(".") else ""
    text = text.removesuffix(".")
    if kind == "list":
        text += f"{'; one of ' + ', '.join(choices) if choices else ''} (repeatable, or a comma list)"
    elif kind == "dict":
        text += " (repeatable)"
    text += stop
    notes = [env] if env else []
    default = info.get_default(call_default_factory=True)
    shown = "all" if choices and kind == "list" and tuple(map(_shown, default)) == choices else _shown(default)
    if shown:
        notes.append(f"default {shown}")
    if notes:
        text += f" [{'; '.join(notes)}]"
    return text.replace("%", "%%")  # argparse formats help with %


def _shown(default: Any) -> str:
    """A default as help shows it; empty for None and empty collections."""
    if default is None:
        return ""
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, enum.Enum):
        return str(default.value)
    if isinstance(default, float):
        return f"{default:g}"
    if isinstance(default, Mapping):
        return ", ".join(f"{k}={_shown(v)}" for k, v in default.items())
    if isinstance(default, tuple | list | set | frozenset):
        return ", ".join(_shown(item) for item in default)
    if isinstance(default, Path):
        return str(default)
    return str(default)


# ---------------------------------------------------------------------------- merging
def _from_flag(option: Option, value: Any) -> Any:
    if option.kind == "list":
        return [option.normalized(item) for item in _comma_list(value)]
    if option.kind == "dict":
        return dict(_pair(option, item, option.flag or option.path) for item in value)
    return value


def _from_env(option: Option, name: str, raw: str) -> Any:
    if raw == "" and option.nullable:
        return None
    if option.kind == "list":
        return [option.normalized(item) for item in _comma_list([raw])]
    if option.kind == "dict":
        return dict(_pair(option, item, name) for item in _comma_list([raw]))
    return option.normalized(raw)


def _pair(option: Option, item: str, source: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(option.path, f"expected KEY=VALUE, got {item!r}", source=source)
    return key.strip(), value.strip()


def _within(path: str, names: Collection[str]) -> bool:
    return any(path == name or path.startswith(name + ".") for name in names)


def _comma_list(values: Any) -> list[str]:
    return [part.strip() for value in values for part in str(value).split(",") if part.strip()]


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        node = nested
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return nested


def _source(field: str, sources: Mapping[str, str]) -> str | None:
    """The flag or variable behind the value of ``field`` (or of the field that contains it)."""
    owners = [path for path in sources if field == path or field.startswith(path + ".")]
    return sources[max(owners, key=len)] if owners else None
