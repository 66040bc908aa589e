"""Imports every dependency listed in a requirements file; exits non-zero naming the ones that are missing."""
import importlib
import importlib.metadata as md
import re
import sys

missing = []
modules_of = md.packages_distributions()
for line in open(sys.argv[1], encoding="utf-8"):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    dist = re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0]
    try:
        md.distribution(dist)
    except md.PackageNotFoundError:
        missing.append(dist)
        continue
    norm = dist.lower().replace("-", "_")
    modules = [m for m, dists in modules_of.items() if norm in (d.lower().replace("-", "_") for d in dists)]
    for module in modules or [norm]:
        try:
            importlib.import_module(module)
        except Exception as err:  # noqa: BLE001 - any import failure is a broken base
            missing.append(f"{dist} (import {module}: {err})")
if missing:
    sys.exit("missing from the base image: " + ", ".join(missing))
print("all dependencies import")
