"""Does the venv (built from requirements.lock) satisfy pyproject.toml, the dev extra included?

`make install` runs it after installing the lock with --no-deps semantics for the package itself: a
dependency added to or tightened in pyproject.toml without `make lock` fails here, by name, instead
of surfacing later as an ImportError. It walks the installed package's requirements, and those of
each dependency (extras such as uvicorn[standard] included), the way pip would resolve them.
"""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement

PACKAGE, EXTRAS = "instagram-dm", {"dev"}


def problems() -> list[str]:
    found: list[str] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(PACKAGE, frozenset(EXTRAS))]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras | {""}):
                continue
            try:
                version = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                found.append(f"{name} needs {req}, which the lock does not install")
                continue
            if not req.specifier.contains(version, prereleases=True):
                found.append(f"{name} needs {req}, the lock has {req.name} {version}")
            todo.append((req.name, frozenset(req.extras)))
    return found


def main() -> int:
    found = problems()
    for line in found:
        print(f"install: {line}", file=sys.stderr)
    if found:
        print(
            "install: requirements.lock is out of date with pyproject.toml; run `make lock`", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
