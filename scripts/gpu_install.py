"""Step 1 of scripts/gpu_check.sh: install, from gpu-wheels/ and without any index, each listed distribution this
Python lacks; the ones it has (any version) are left as they are. `--dry-run` only says what it would do.

    python scripts/gpu_install.py WHEELS_DIR [--dry-run]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import subprocess
import sys
from pathlib import Path

LIST = Path(__file__).with_name("gpu_wheels.txt")


def requirements() -> list[tuple[str, str]]:
    pins = []
    for line in LIST.read_text().splitlines():
        requirement = line.split("#", 1)[0].strip()
        if requirement:
            name, version = requirement.split("==")
            pins.append((name, version))
    return pins


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def wheel_for(wheels: Path, name: str, version: str) -> Path | None:
    prefix = f"{normalized(name)}-{version}-"
    return next((w for w in sorted(wheels.glob("*.whl")) if w.name.lower().startswith(prefix.lower())), None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wheels", type=Path)
    parser.add_argument("--dry-run", action="store_true")
    ns = parser.parse_args()
    to_install: list[Path] = []
    unobtainable: list[str] = []
    for name, version in requirements():
        try:
            present = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            wheel = wheel_for(ns.wheels, name, version)
            print(f"missing  {name}=={version}: {wheel.name if wheel else 'NO WHEEL in ' + str(ns.wheels)}")
            if wheel is None:
                unobtainable.append(f"{name}=={version}")
            else:
                to_install.append(wheel)
            continue
        note = "" if present == version else f" (pinned {version}; kept)"
        print(f"present  {name} {present}{note}")
    if unobtainable:
        print(f"cannot install {', '.join(unobtainable)}: run `make gpu-wheels` and copy gpu-wheels/ along")
        return 1
    if not to_install:
        print("nothing to install")
        return 0
    command = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", *map(str, to_install)]
    print(("would run: " if ns.dry_run else "running: ") + " ".join(command))
    if ns.dry_run:
        return 0
    # A distribution's Python may be marked externally managed (PEP 668): this is a throw-away machine.
    env = {**os.environ, "PIP_BREAK_SYSTEM_PACKAGES": "1"}
    return subprocess.run(command, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
