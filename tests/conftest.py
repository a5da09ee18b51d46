import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("DIFFPLUGIN_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "official"
DEGRADED = SHARED / "data" / "degraded"

# plugin_core from this checkout when it is not installed (e.g. under ComfyUI's own Python);
# appended, so ComfyUI's `nodes` module is never shadowed by this repository's nodes/ package.
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))


def pytest_configure(config):
    config.addinivalue_line("markers", "comfyui: needs a real ComfyUI (COMFYUI_DIR)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"official fixtures not found at {FIXTURES} (set DIFFPLUGIN_SHARED)")
    return FIXTURES


@pytest.fixture(scope="session")
def degraded_dir() -> Path:
    if not DEGRADED.is_dir():
        pytest.skip(f"degraded photos not found at {DEGRADED} (set DIFFPLUGIN_SHARED)")
    return DEGRADED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say loudly how much did not run, and why: a green run that skipped most tests proves little."""
    skipped = len(terminalreporter.stats.get("skipped", []))
    total = skipped + sum(len(terminalreporter.stats.get(k, [])) for k in ("passed", "failed", "error", "xfailed", "xpassed"))
    if not skipped:
        return
    reasons = []
    if not FIXTURES.is_dir() or not DEGRADED.is_dir():
        reasons.append(f"the shared fixtures and photos are not at {SHARED} (set DIFFPLUGIN_SHARED to the folder "
                       "holding fixtures/official and data/degraded)")
    if not os.environ.get("COMFYUI_DIR"):
        reasons.append("COMFYUI_DIR is not set: the real-ComfyUI tests did not run (README, Tests)")
    terminalreporter.write_sep("=" if FIXTURES.is_dir() else "!", f"{skipped} of {total} tests SKIPPED", yellow=True, bold=True)
    for reason in reasons:
        terminalreporter.write_line(f"  - {reason}", yellow=True)
