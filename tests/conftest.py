"""pytest fixtures; shared helper functions live in tests/helpers.py."""
import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from helpers import SHARED_DATA  # noqa: E402  pylint: disable=g-import-not-at-top


@pytest.fixture
def shared_data():
  if not os.path.isdir(SHARED_DATA):
    pytest.skip(f"shared data folder {SHARED_DATA} not present")
  return SHARED_DATA
