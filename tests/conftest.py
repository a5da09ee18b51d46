import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# What the repository carries (tests/data/README.md): the tiny reference-layout plugins and
# the reference outputs the tiny parity tests compare with.
DATA_FIXTURES = REPO / "tests" / "data" / "fixtures"
# What stays outside: the SD1.5-shape reference fixtures (../shared, or DIFFPLUGIN_SHARED).
SHARED = Path(os.environ.get("DIFFPLUGIN_SHARED", REPO.parent / "shared"))
FIXTURES = SHARED / "fixtures" / "official"
SHARED_REASON = (f"needs the SD1.5-shape reference fixtures, not found at {FIXTURES / 'sd15'} "
                 "(set DIFFPLUGIN_SHARED to the folder holding fixtures/official)")
COMFYUI_REASON = "COMFYUI_DIR"  # the real-ComfyUI tests' skip reasons name it

# plugin_core from this checkout when it is not installed (e.g. under ComfyUI's own Python);
# appended, so ComfyUI's `nodes` module is never shadowed by this repository's nodes/ package.
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))


def pytest_configure(config):
    config.addinivalue_line("markers", "comfyui: needs a real ComfyUI (COMFYUI_DIR)")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")


def shared_fixtures_present() -> bool:
    return (FIXTURES / "sd15").is_dir() and (FIXTURES / "reference").is_dir()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The tiny reference-layout fixtures, from the repository (always the same files: with
    ../shared present tests/test_parity.py checks they equal its own)."""
    return DATA_FIXTURES


@pytest.fixture(scope="session")
def sd15_fixtures_dir() -> Path:
    """../shared's fixtures/official: sd15/ (plugins at SD1.5 shape, the reference
    PromptTunner.pt) and reference/*_sd15, selector.safetensors; a skip naming
    DIFFPLUGIN_SHARED without them."""
    if not shared_fixtures_present():
        pytest.skip(SHARED_REASON)
    return FIXTURES


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory) -> Path:
    """The photos the tests make (tests/photos.py: drawn scenes, clean and degraded), written
    once per session: the same pixels in every run, with or without ../shared."""
    from tests.photos import write_photos

    return write_photos(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="session")
def selector_file(tmp_path_factory) -> Path:
    """A Plugin-Selector in the reference layout (plugin_selector/PromptTunner.pt:
    {'model': state_dict}, logit_scale and proj_v / proj_t 768 wide) with seeded random
    weights, for the tests that need such a file but not the reference fixture's values."""
    from tests.random_models import write_reference_selector

    return write_reference_selector(tmp_path_factory.mktemp("selector") / "plugin_selector" / "PromptTunner.pt")


_skipped: list[str] = []  # node ids of the tests that skipped in this run


def pytest_runtest_logreport(report):
    if report.skipped and not getattr(report, "wasxfail", None):
        _skipped.append(report.nodeid)


def pytest_collectreport(report):
    if report.skipped:  # a module skipped as a whole
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    """DIFFPLUGIN_NO_SKIPS=1 (CI's run of the real-ComfyUI tests): a skip fails the run, so a
    missing browser, model or host cannot pass for a green run."""
    if os.environ.get("DIFFPLUGIN_NO_SKIPS") == "1" and _skipped and session.exitstatus == 0:
        session.exitstatus = 1


def _reason(report) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr or "")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Say loudly how much did not run, and why: a green run that skipped many tests proves little."""
    skipped = terminalreporter.stats.get("skipped", [])
    if os.environ.get("DIFFPLUGIN_NO_SKIPS") == "1" and _skipped:
        terminalreporter.write_sep("!", f"DIFFPLUGIN_NO_SKIPS=1 and {len(_skipped)} skipped: the run fails", red=True, bold=True)
    total = len(skipped) + sum(len(terminalreporter.stats.get(k, [])) for k in ("passed", "failed", "error", "xfailed", "xpassed"))
    if not skipped:
        return
    shared = [r for r in skipped if "DIFFPLUGIN_SHARED" in _reason(r)]
    comfy = [r for r in skipped if r not in shared and COMFYUI_REASON in _reason(r)]
    other = [r for r in skipped if r not in shared and r not in comfy]
    terminalreporter.write_sep("=" if len(skipped) <= total // 10 else "!", f"{len(skipped)} of {total} tests SKIPPED",
                               yellow=True, bold=True)
    if shared:
        terminalreporter.write_line(f"  - {len(shared)} for want of ../shared: the SD1.5-shape reference fixtures are not at "
                                    f"{FIXTURES} (set DIFFPLUGIN_SHARED to the folder holding fixtures/official)", yellow=True)
    if comfy:
        terminalreporter.write_line(f"  - {len(comfy)} for want of a real ComfyUI (COMFYUI_DIR not set, or ComfyUI does not import "
                                    "under this Python; README, Tests); a test module skipped as a whole counts once here", yellow=True)
    if other:
        terminalreporter.write_line(f"  - {len(other)} for other reasons (listed above)", yellow=True)
