#!/usr/bin/env bash
# mypy --strict over the installed layout of the package.
#
# pyproject maps top-level folders into the namespace (producers/ -> prefpair.producers, ...),
# which setuptools' editable install resolves with an import hook mypy cannot see. So we build
# build/typecheck/prefpair as a tree of symlinks shaped like the installed package, and mypy
# (files = ["build/typecheck/prefpair"] in pyproject) checks that tree.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
MYPY=("$PY" -m mypy)

tree=build/typecheck
rm -rf "$tree"
mkdir -p "$tree"

# One symlink per package in [tool.setuptools] packages, from its folder in package-dir.
"$PY" - "$tree" <<'PYEOF'
import os
import sys
import tomllib
from pathlib import Path

tree = Path(sys.argv[1])
config = tomllib.loads(Path("pyproject.toml").read_text())["tool"]["setuptools"]
package_dir = config.get("package-dir", {})
packages = sorted(config["packages"], key=lambda name: name.count("."))


def source(package: str) -> Path:
    """The folder a package comes from: its package-dir entry, else its parent's folder + name."""
    if package in package_dir:
        return Path(package_dir[package])
    parent, _, leaf = package.rpartition(".")
    return source(parent) / leaf if parent else Path(package)


for package in packages:
    src = source(package)
    if not src.is_dir():
        continue  # declared but not written yet
    dest = tree.joinpath(*package.split("."))
    if package == "prefpair":
        # The root package: link its files one by one, subpackages get their own link below.
        dest.mkdir(parents=True, exist_ok=True)
        for entry in src.iterdir():
            if entry.name == "__pycache__" or entry.is_dir():
                continue
            (dest / entry.name).symlink_to(os.path.relpath(entry.resolve(), dest))
        continue
    if dest.is_symlink() or dest.exists():
        continue  # already inside a linked parent folder
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.symlink_to(os.path.relpath(src.resolve(), dest.parent))
PYEOF

exec "${MYPY[@]}" "$@"
