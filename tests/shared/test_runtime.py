"""What every process's runtime sets up besides its collaborators."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared.runtime import SWITCH_INTERVAL_SECONDS


def test_this_process_hands_the_gil_over_within_a_fifth_of_a_millisecond(rt):
    assert SWITCH_INTERVAL_SECONDS == pytest.approx(0.0002)
    assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_SECONDS)


def test_a_worker_process_importing_its_actors_does_too(rt):
    # The actors modules build the runtime when imported, as `dramatiq services.upload.actors` does
    out = subprocess.run([sys.executable, "-c", "import sys, services.upload.actors; print(sys.getswitchinterval())"],
                         capture_output=True, text=True, check=True, timeout=60)
    assert float(out.stdout.strip()) == pytest.approx(SWITCH_INTERVAL_SECONDS)
