"""Shared test helpers: repository paths and a CLI runner."""
import os
import subprocess
import sys

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(os.path.dirname(REPO), "shared", "data")


def run_cli(args, timeout=300, **kwargs):
  """Runs `python ARGS...` from the repo root; returns CompletedProcess (text)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
  return subprocess.run([sys.executable, *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout, **kwargs)


def assert_one_line_error(result, *fragments):
  """The process failed with a single `error: ...` line naming `fragments`."""
  assert result.returncode != 0, result.stdout + result.stderr
  lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
  assert "Traceback" not in result.stderr, result.stderr
  assert lines and lines[-1].startswith("error: "), result.stderr
  for fragment in fragments:
    assert fragment in lines[-1], lines[-1]


@pytest.fixture
def shared_data():
  if not os.path.isdir(SHARED_DATA):
    pytest.skip(f"shared data folder {SHARED_DATA} not present")
  return SHARED_DATA
