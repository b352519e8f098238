"""Step 1 of scripts/gpu_check.sh: install, from gpu-wheels/ and without any index, each listed distribution this
Python lacks or has in an older version; newer ones are left as they are (the machine's torch and transformers
were installed with them). `--dry-run` only says what it would do.

    python scripts/gpu_install.py WHEELS_DIR [--dry-run]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import zipfile
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


def older(present: str, listed: str) -> bool:
    try:
        from packaging.version import Version  # transformers' dependency: on the GPU machine
    except ImportError:
        from pip._vendor.packaging.version import Version  # type: ignore[assignment]
    return Version(present) < Version(listed)


def wheel_for(wheels: Path, name: str, version: str) -> Path | None:
    prefix = f"{normalized(name)}-{version}-"
    return next((w for w in sorted(wheels.glob("*.whl")) if w.name.lower().startswith(prefix.lower())), None)


def unpack(wheels: list[Path], site: Path, dry_run: bool) -> int:
    """No pip here: a wheel is a zip of what goes into site-packages, so unpack them into `site` (which
    scripts/gpu_check.sh puts on PYTHONPATH). Enough for what the check imports; no console scripts."""
    print(f"no pip for {sys.executable}: {'would unpack' if dry_run else 'unpacking'} {len(wheels)} wheels into {site}")
    if not dry_run:
        site.mkdir(parents=True, exist_ok=True)
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                archive.extractall(site)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("wheels", type=Path)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--site", type=Path, default=Path(".gpu-site"), help="where wheels go when there is no pip")
    ns = parser.parse_args()
    to_install: list[Path] = []
    unobtainable: list[str] = []
    for name, version in requirements():
        try:
            present: str | None = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            present = None
        if present is not None and not older(present, version):
            note = "" if present == version else f" (listed {version}; kept)"
            print(f"present  {name} {present}{note}")
            continue
        wheel = wheel_for(ns.wheels, name, version)
        what = "missing " if present is None else f"older ({present})"
        print(f"{what} {name}=={version}: {wheel.name if wheel else 'NO WHEEL in ' + str(ns.wheels)}")
        if wheel is None:
            unobtainable.append(f"{name}=={version}")
        else:
            to_install.append(wheel)
    if unobtainable:
        print(f"cannot install {', '.join(unobtainable)}: run `make gpu-wheels` and copy gpu-wheels/ along")
        return 1
    if not to_install:
        print("nothing to install")
        return 0
    if importlib.util.find_spec("pip") is None:
        return unpack(to_install, ns.site, ns.dry_run)
    command = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", *map(str, to_install)]
    print(("would run: " if ns.dry_run else "running: ") + " ".join(command))
    if ns.dry_run:
        return 0
    # A distribution's Python may be marked externally managed (PEP 668): this is a throw-away machine.
    env = {**os.environ, "PIP_BREAK_SYSTEM_PACKAGES": "1"}
    return subprocess.run(command, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
