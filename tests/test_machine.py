"""`utils.machine`: the CPU line, thread caps and pinning to cores."""
import os
import subprocess
import sys

import pytest

from ptychonet_tf.utils import machine
from ptychonet_tf.utils.errors import UserError

MULTI_CORE = pytest.mark.skipif(
    len(machine.usable_cores()) < 2, reason="needs two usable cores")


def _python(code):
  """Runs `code` in a fresh interpreter (pinning must not touch pytest's)."""
  result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr
  return result.stdout.split()


def test_cpu_description_names_the_flags():
  line = machine.cpu_description()
  assert "cores" in line
  for flag in machine.CPU_FLAGS:
    assert flag in line


def test_usable_cores_is_the_affinity():
  assert machine.usable_cores() == sorted(os.sched_getaffinity(0))


@MULTI_CORE
def test_pin_to_cores_moves_running_and_later_threads():
  out = _python(
      "import os, threading, time\n"
      "from ptychonet_tf.utils import machine\n"
      "ready, seen = threading.Event(), []\n"
      "def worker():\n"
      "  ready.set(); time.sleep(0.5)\n"
      "  seen.append(len(os.sched_getaffinity(0)))\n"
      "old = threading.Thread(target=worker); old.start(); ready.wait()\n"
      "cores = machine.pin_to_cores(1)\n"
      "new = threading.Thread(target=worker); new.start()\n"
      "old.join(); new.join()\n"
      "print(len(cores), len(os.sched_getaffinity(0)), *seen)\n")
  assert out == ["1", "1", "1", "1"]


def test_pin_to_all_cores_changes_nothing():
  cores = machine.usable_cores()
  assert machine.pin_to_cores(len(cores)) == cores
  assert machine.usable_cores() == cores


@pytest.mark.slow
@MULTI_CORE
def test_set_threads_caps_the_pools_and_pins():
  out = _python(
      "import os\n"
      "from ptychonet_tf.utils import machine\n"
      "machine.set_threads(1)\n"
      "import tensorflow as tf\n"
      "tf.constant(1.0) + 1.0\n"
      "print(tf.config.threading.get_intra_op_parallelism_threads(),\n"
      "      tf.config.threading.get_inter_op_parallelism_threads(),\n"
      "      len(os.sched_getaffinity(0)))\n")
  assert out[-3:] == ["1", "1", "1"]


def test_set_threads_zero_keeps_everything():
  cores = machine.usable_cores()
  machine.set_threads(0)
  assert machine.usable_cores() == cores


def test_negative_threads_is_a_user_error():
  with pytest.raises(UserError, match="--threads=-1 must be >= 0"):
    machine.set_threads(-1)
