"""The systemd units: `systemd-analyze verify` is clean on each, and the exposure score is the README's.

The units start /opt/lead-poller/bin/lead-poller, which a test machine does not have; verify checks
that the command exists, so each unit is verified as a copy whose ExecStart is this checkout's own
installed `lead-poller` (same arguments). `make test` installs systemd-analyze when it is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
UNITS = sorted((REPO / "systemd").glob("lead-poller*"))
INSTALLED = "/opt/lead-poller/bin/lead-poller"


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    assert found, "systemd-analyze is missing: run the tests through `make test`, which installs the systemd package"
    return found


@pytest.fixture(scope="module")
def unit_dir(tmp_path_factory) -> Path:
    here = Path(sys.executable).parent / "lead-poller"
    assert here.exists(), "the lead-poller script of this environment is missing (pip install -e .)"
    target = tmp_path_factory.mktemp("units")
    for unit in UNITS:
        text = unit.read_text(encoding="utf-8")
        if unit.suffix == ".service":
            assert INSTALLED in text
        (target / unit.name).write_text(text.replace(INSTALLED, str(here)), encoding="utf-8")
    # A template is verified as the instance systemd would start.
    shutil.copy(target / "lead-poller@.service", target / "lead-poller@example.service")
    return target


def test_the_expected_units_exist():
    assert [u.name for u in UNITS] == ["lead-poller-once.service", "lead-poller-once.timer", "lead-poller.service", "lead-poller@.service"]


@pytest.mark.parametrize("name", ["lead-poller.service", "lead-poller@.service", "lead-poller@example.service", "lead-poller-once.service", "lead-poller-once.timer"])
def test_systemd_analyze_verify_is_clean(unit_dir, name):
    done = subprocess.run([systemd_analyze(), "verify", name], cwd=unit_dir, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr.strip(), done.stdout.strip()) == (0, "", "")


@pytest.mark.parametrize("unit", [u for u in UNITS if u.suffix == ".service"], ids=lambda u: u.name)
def test_no_secret_in_any_unit_and_notify_where_it_is_a_daemon(unit):
    text = unit.read_text(encoding="utf-8")
    assert not re.search(r"^Environment=.*(SECRET|TOKEN)", text, re.MULTILINE)
    assert "LoadCredential=AUTH0_CLIENT_SECRET:" in text and "LoadCredential=SALESFORCE_CLIENT_SECRET:" in text
    if "--run-once" not in text:
        assert "Type=notify" in text and "WatchdogSec=" in text


def exposure(unit_dir: Path, name: str) -> float:
    done = subprocess.run([systemd_analyze(), "security", "--offline=true", f"./{name}"], cwd=unit_dir, capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    return float(match.group(1))


def test_exposure_score_is_good_and_the_readme_states_it(unit_dir):
    scores = {name: exposure(unit_dir, name) for name in ("lead-poller.service", "lead-poller@example.service", "lead-poller-once.service")}
    assert max(scores.values()) <= 2.0, scores
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    stated = re.search(r"exposure level \*\*(\d+\.\d+) OK\*\*", readme)
    assert stated and float(stated.group(1)) == scores["lead-poller.service"], "update the score in README 'Security of the units'"
