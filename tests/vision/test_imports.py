"""The pure parts of vision/ (matching, crops, debug picture, the package itself) load no torch."""

from __future__ import annotations

import subprocess
import sys


def test_pure_modules_do_not_import_torch() -> None:
    code = (
        "import sys, vision, vision.matching, vision.crops, vision.debug; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'torchvision' not in sys.modules"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
