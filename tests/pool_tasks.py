"""Tasks for `writer.run_pool` in tests: module-level (a spawned worker
imports them by name) and light (no TensorFlow in the workers)."""
import os


def setup(*args):
  """An initializer that takes `init_worker`'s arguments and does nothing."""
  del args


def exit_on_one(task):
  """Ends its worker process abruptly on task 1 (as the system's OOM killer
  would); returns the others."""
  if task == 1:
    os._exit(9)  # pylint: disable=protected-access
  return task
