"""utils/locks.py: one job per folder; the second is refused naming the
holder's PID, and the lock of a killed holder is taken over."""
import os
import signal
import subprocess
import sys

import pytest

from helpers import REPO
from ptychonet_tf.utils import locks
from ptychonet_tf.utils.errors import UserError

HOLD = ("import sys, time\n"
        "from ptychonet_tf.utils import locks\n"
        "with locks.hold(sys.argv[1], 'make_tfrecords'):\n"
        "  print('holding', flush=True)\n"
        "  time.sleep(120)\n")


@pytest.fixture
def holder_process(tmp_path):
  """A process holding tmp_path/out's lock (killed at the end)."""
  folder = str(tmp_path / "out")
  proc = subprocess.Popen([sys.executable, "-c", HOLD, folder],
                          stdout=subprocess.PIPE, text=True, cwd=REPO,
                          env=dict(os.environ, PYTHONPATH=REPO))
  assert proc.stdout.readline().strip() == "holding"
  yield folder, proc
  if proc.poll() is None:
    proc.kill()
  proc.wait()
  proc.stdout.close()


def test_a_second_job_is_refused_naming_the_holder(holder_process):
  folder, proc = holder_process
  assert locks.holder(folder) == (proc.pid, "make_tfrecords")
  with pytest.raises(UserError) as e:
    with locks.hold(folder, "make_tfrecords"):
      pass
  assert str(e.value) == (f"{folder} is in use by make_tfrecords (PID "
                          f"{proc.pid}); wait for it to finish, or use another "
                          f"folder")


def test_the_lock_of_a_killed_holder_is_taken_over(holder_process):
  folder, proc = holder_process
  os.kill(proc.pid, signal.SIGKILL)
  proc.wait()
  assert locks.holder(folder) == (proc.pid, "make_tfrecords")  # stale file
  with locks.hold(folder, "train"):
    assert locks.holder(folder) == (os.getpid(), "train")
  # Released: the next job takes it again.
  with locks.hold(folder, "export"):
    pass


def test_nested_holds_in_one_process(tmp_path):
  folder = str(tmp_path / "a")
  with locks.hold(folder, "outer"):
    with locks.hold(folder + "/", "inner"):
      assert locks.holder(folder) == (os.getpid(), "outer")
    assert locks.holder(folder)[1] == "outer"


def test_a_file_in_place_of_the_folder(tmp_path):
  path = tmp_path / "file"
  path.write_text("x")
  with pytest.raises(UserError, match=f"cannot lock {path}"):
    with locks.hold(str(path), "make_tfrecords"):
      pass


def test_a_folder_made_for_the_lock_is_removed_when_nothing_was_written(
    tmp_path):
  folder = str(tmp_path / "new")
  with pytest.raises(UserError, match="refused"):
    with locks.hold(folder, "make_tfrecords"):
      raise UserError("refused before writing")
  assert not os.path.exists(folder)
  with locks.hold(folder, "make_tfrecords"):
    with open(os.path.join(folder, "dataset.json"), "w") as f:
      f.write("{}")
  assert sorted(os.listdir(folder)) == [locks.LOCK_NAME, "dataset.json"]
  # A folder that existed before is never removed.
  empty = tmp_path / "empty"
  empty.mkdir()
  with locks.hold(str(empty), "make_tfrecords"):
    pass
  assert empty.is_dir()
