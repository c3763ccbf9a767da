"""The import layers of prefpair, read from the source tree (AST, nothing imported).

Bottom-up: the ground floor ``prefpair/`` (settings, flags, Kafka clients, durable files, errors,
topics, the local broker), the wire contract ``schemas/``, the areas (``producers/ consumers/
compile/ service/ report/``), the judge (``judge/``: reads the log with compile's filters and writes
feedback through the producer SDK), the simulation package ``simulate/`` (synthetic traffic through the SDK and
the consumer's own segment writer), and the command line ``cli/`` on top.
A module may import its own package and the layers below it; an area imports no other area,
except for the pairs in :data:`SAME_LAYER_ALLOWED`. Every package of pyproject must be placed.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("ground floor", ("prefpair",)),
    ("contract", ("prefpair.schemas",)),
    ("areas", ("prefpair.producers", "prefpair.consumers", "prefpair.compile", "prefpair.service", "prefpair.report")),
    ("judging", ("prefpair.judge",)),
    ("simulation", ("prefpair.simulate",)),
    ("command line", ("prefpair.cli",)),
)
LAYER_OF = {package: index for index, (_, packages) in enumerate(LAYERS) for package in packages}

# (importing module, imported package): area-to-area imports we accept for now, and why.
SAME_LAYER_ALLOWED: set[tuple[str, str]] = set()


def _package_dirs() -> dict[str, Path]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = {package: ROOT / folder for package, folder in config["package-dir"].items()}
    assert set(dirs) <= set(config["packages"])
    return dirs


PACKAGE_DIRS = _package_dirs()


def _unit(module: str) -> str | None:
    """The package of pyproject's package-dir that holds ``module`` (the longest prefix)."""
    owners = [p for p in PACKAGE_DIRS if module == p or module.startswith(p + ".")]
    return max(owners, key=len) if owners else None


def _modules() -> Iterator[tuple[str, Path]]:
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(folder).with_suffix("")
            parts = [part for part in relative.parts if part != "__init__"]
            inner = [p for p in PACKAGE_DIRS if p != package and p.startswith(package + ".")]
            name = ".".join([package, *parts])
            if any(name == p or name.startswith(p + ".") for p in inner):
                continue  # mapped to another folder (none today), counted there
            yield name, path


def _imports(module: str, path: Path) -> Iterator[str]:
    """Every prefpair module ``module`` imports, at any depth (functions, TYPE_CHECKING included)."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target
            yield from (f"{target}.{alias.name}" for alias in node.names)  # `from prefpair import topics`


def _violations() -> tuple[list[str], set[tuple[str, str]]]:
    problems: list[str] = []
    used_allowances: set[tuple[str, str]] = set()
    for module, path in _modules():
        unit = _unit(module)
        assert unit is not None
        for target in _imports(module, path):
            if target != "prefpair" and not target.startswith("prefpair."):
                continue
            imported = _unit(target)
            if imported is None or imported == unit:
                continue
            mine, theirs = LAYER_OF[unit], LAYER_OF[imported]
            if theirs < mine:
                continue
            if theirs == mine and (module, imported) in SAME_LAYER_ALLOWED:
                used_allowances.add((module, imported))
                continue
            where = "a higher layer" if theirs > mine else "another package of its layer"
            problems.append(f"{module} ({LAYERS[mine][0]}) imports {target} ({where}: {LAYERS[theirs][0]})")
    return sorted(set(problems)), used_allowances


def test_every_package_has_a_layer() -> None:
    assert set(PACKAGE_DIRS) == set(LAYER_OF), "place each package of pyproject in LAYERS"


def test_no_module_imports_upwards_or_sideways() -> None:
    problems, used = _violations()
    assert problems == [], "\n".join(problems)
    assert used == SAME_LAYER_ALLOWED, f"allowances no longer needed: {SAME_LAYER_ALLOWED - used}"


def test_no_shipped_or_benchmark_code_imports_a_test_module() -> None:
    """Only tests import tests/ helpers: what the benchmarks share with them lives in the package."""
    test_modules = {path.stem for path in (ROOT / "tests").glob("*.py")}
    sources = [*(path for _, path in _modules()), *sorted((ROOT / "bench").rglob("*.py"))]
    problems = []
    for path in sources:
        for target in _imports(path.stem, path):
            if target.split(".")[0] in test_modules | {"tests"}:
                problems.append(f"{path.relative_to(ROOT)} imports {target}")
    assert problems == [], "\n".join(sorted(set(problems)))


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """The walker resolves absolute, relative and function-level imports (so the test above can fail)."""
    source = tmp_path / "flags.py"
    source.write_text(
        "from . import config\nfrom .errors import ConfigError\n"
        "def f():\n    from prefpair.consumers.daemon import ConsumerDaemon\n    import prefpair.cli\n"
    )
    found = set(_imports("prefpair.flags", source))
    assert {"prefpair.config", "prefpair.errors", "prefpair.consumers.daemon", "prefpair.cli"} <= found
    assert _unit("prefpair.consumers.daemon") == "prefpair.consumers" and _unit("prefpair.broker.cli") == "prefpair"
