"""Layering the design card asks for: the API never imports torch or worker code."""

from __future__ import annotations

import subprocess
import sys

from tools.localfarm import ROOT


def test_the_api_never_imports_torch_or_workers() -> None:
    code = (
        "import sys\n"
        "from api import create_app\n"
        "app = create_app()\n"
        "from api import wsgi\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'TTS', 'workers', 'transformers'))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"the API imported: {out.stdout.strip()}"
