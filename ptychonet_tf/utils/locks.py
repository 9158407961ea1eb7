"""Exclusive locks on folders: one job at a time per run or dataset directory.

A job that writes a folder (a training run's `--model_dir`, a dataset's
`--out_dir`) holds `<folder>/.lock` for as long as it runs:

  with locks.hold(model_dir, "train"):
    ...

The lock is an advisory `fcntl.flock` on that file, which the operating
system releases when the holder exits, however it exits (a crash, SIGKILL):
a lock left by a dead process is simply taken over. The holder writes its
PID and purpose into the file, so a second job is refused in one line that
names them:

  error: /runs/a is in use by train (PID 4242); wait for it to finish, or
  use another folder

Locks are per process and not re-entrant across processes; inside one
process a nested `hold` of the same folder is allowed (the outer one holds
it). A folder that `hold` created and that holds nothing but the lock file
when the job ends (a job refused before it wrote anything) is removed
again. Folders on file systems without flock support (some network mounts)
are refused with their OSError's cause named.
"""
import contextlib
import errno
import fcntl
import os

from ptychonet_tf.utils.errors import UserError

LOCK_NAME = ".lock"

# Folders this process holds: {realpath: depth}.
_held = {}


def lock_path(folder):
  """The lock file of a folder."""
  return os.path.join(folder, LOCK_NAME)


def holder(folder):
  """(pid, purpose) written by the lock's last holder, or None.

  The file outlives its holder; whether that holder still runs is what
  `hold` finds out by trying the lock.
  """
  try:
    with open(lock_path(folder), encoding="utf-8") as f:
      text = f.read(200)
  except OSError:
    return None
  pid, _, purpose = text.strip().partition(" ")
  return (int(pid), purpose or "another job") if pid.isdigit() else None


@contextlib.contextmanager
def hold(folder, purpose):
  """Holds the exclusive lock of `folder` (created if missing) while inside.

  Args:
    folder: the directory to lock.
    purpose: what this job is (e.g. "train"), shown to a refused second job.

  Raises:
    UserError: another live process holds the lock, or the folder cannot be
      created or locked (a file in its place, no permission, a full or
      read-only disk).
  """
  key = os.path.realpath(folder)
  if key in _held:
    _held[key] += 1
    try:
      yield
    finally:
      _held[key] -= 1
    return
  created = not os.path.isdir(folder)
  handle = _acquire(folder)
  try:
    try:
      os.ftruncate(handle, 0)
      os.write(handle, f"{os.getpid()} {purpose}\n".encode())
    except OSError:
      pass  # a full disk: the lock holds all the same, the message is generic
    _held[key] = 1
    try:
      yield
    finally:
      del _held[key]
      if created:
        _remove_if_empty(folder)
  finally:
    os.close(handle)  # releases the flock


def _acquire(folder):
  """An open descriptor of folder's lock file, flock'ed exclusively.

  A lock file that its holder removed (an empty folder it had created, see
  `_remove_if_empty`) between our open and our flock is not the lock any
  more: then the lock file is opened again.
  """
  while True:
    try:
      os.makedirs(folder, exist_ok=True)
      handle = os.open(lock_path(folder), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise UserError(f"cannot lock {folder}: {e.strerror or e}") from None
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      os.close(handle)
      if e.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
        raise UserError(f"cannot lock {folder}: {e.strerror or e}") from None
      who = holder(folder)
      name = f"{who[1]} (PID {who[0]})" if who else "another job"
      raise UserError(f"{folder} is in use by {name}; wait for it to finish, "
                      f"or use another folder") from None
    try:
      current = os.stat(lock_path(folder)).st_ino
    except OSError:
      current = None
    if current == os.fstat(handle).st_ino:
      return handle
    os.close(handle)  # removed meanwhile: take the new one


def _remove_if_empty(folder):
  """Removes a folder that `hold` created and that holds only the lock file
  (a job refused before it wrote anything), the lock still held."""
  try:
    if os.listdir(folder) == [LOCK_NAME]:
      os.remove(lock_path(folder))
      os.rmdir(folder)
  except OSError:
    pass  # written to meanwhile, or not ours to remove
