"""Print the requirement lines of pyproject.toml (base + the named extras, `whyrec[...]` expanded),
so the image installs its dependencies from pyproject.toml alone: that layer survives source edits."""
from __future__ import annotations

import re
import sys
import tomllib

SELF = re.compile(r"^whyrec\[([^\]]*)\]$")


def requirements(project: dict, extras: list[str]) -> list[str]:
    optional = project.get("optional-dependencies", {})
    out, seen, todo = list(project.get("dependencies", [])), set(), list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"requirements.py: no extra {extra!r} in pyproject.toml (have {sorted(optional)})")
        seen.add(extra)
        for req in optional[extra]:
            m = SELF.match(req.replace(" ", ""))
            if m:
                todo.extend(e for e in m.group(1).split(",") if e)
            else:
                out.append(req)
    return list(dict.fromkeys(out))


if __name__ == "__main__":
    path, *extras = sys.argv[1:] or ["pyproject.toml"]
    with open(path, "rb") as f:
        project = tomllib.load(f)["project"]
    print("\n".join(requirements(project, [e for arg in extras for e in arg.split(",") if e])))
