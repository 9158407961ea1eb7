"""Commands run in order as stages of a longer job (make demo, the Siemens
star's learned pipeline): a header per stage, each command printed (so any
stage can be repeated by hand) and timed."""
import subprocess
import time

from ptychonet_tf.utils.errors import UserError


def fmt(seconds):
  """"3m07s"."""
  return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


class Stages:
  """Runs commands in order, printing a header per stage and timing each."""

  def __init__(self, total):
    self.total, self.done, self.times = total, 0, []
    self.start = time.time()

  def run(self, title, command):
    self.done += 1
    print(f"\n=== [{self.done}/{self.total}] {title} "
          f"(elapsed {fmt(time.time() - self.start)})", flush=True)
    print("$ " + " ".join(command), flush=True)
    tick = time.time()
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
      raise UserError(f"stage '{title}' failed with exit status "
                      f"{result.returncode} (its message is above); fix it and "
                      f"re-run: finished stages are kept")
    self.times.append((title, time.time() - tick))
