"""The training loop: epochs of compiled steps from a global step.

Nothing here is PtychoNet's: `EpochSchedule` does the epoch arithmetic of a
run whose epochs may have different lengths, and `run_epochs` runs epochs of
a step function from wherever the global step stands (a resumed run skips
the steps it did), checkpoints at every epoch end and every
`checkpoint_secs`, and writes the train summaries (loss per step every
`log_every` steps; per epoch: mean loss, items per second, the epoch and
the task's own scalars, e.g. the learning rate).
"""
import contextlib
import dataclasses
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf


class EpochSchedule:
  """The steps of each epoch of a run, and where a step count lies.

  Args:
    steps: the steps of each 0-based epoch, in order.
  """

  def __init__(self, steps):
    self.steps = tuple(int(s) for s in steps)

  def __len__(self):
    return len(self.steps)

  def start(self, epoch):
    """The step count at which 0-based `epoch` starts."""
    return sum(self.steps[:epoch])

  def epoch_at(self, step):
    """The 0-based epoch that `step` lies in (len(self) when done)."""
    epoch = 0
    while epoch < len(self) and self.start(epoch + 1) <= step:
      epoch += 1
    return epoch


@dataclasses.dataclass
class Hooks:
  """What a task gives the loop.

  Attributes:
    dataset: epoch -> the epoch's (distributed, repeated) input.
    step: epoch -> the compiled step of that epoch: step(iterator) -> loss.
    title: epoch -> the line printed when it starts.
    after_epoch: (epoch, mean loss, items per second) -> None, called on
      the chief after the epoch's checkpoint (the held-out evaluation).
    epoch_scalars: () -> {name: value} written per epoch besides the loss.
    guard: () -> a context manager around input creation and every step
      (e.g. one that names a damaged input file).
  """
  dataset: Callable
  step: Callable
  title: Callable
  after_epoch: Callable
  epoch_scalars: Callable = dict
  guard: Callable = contextlib.nullcontext


def run_epochs(schedule, global_step, hooks, save, writer=None,
               checkpoint_secs=0, items_per_step=1, items_name="items",
               is_chief=True, verbose=True, log_every=10):
  """Runs the epochs of `schedule` from the global step to the end.

  Args:
    schedule: an EpochSchedule.
    global_step: the tf.Variable every step counts (the checkpoint holds
      it).
    hooks: Hooks.
    save: () -> None, writes a checkpoint.
    writer: the train summary writer (None: no summaries).
    checkpoint_secs: also checkpoint within an epoch after this long (0 =
      only at epoch ends).
    items_per_step, items_name: how many of what a step processes (e.g.
      patterns), for the rate: "<items_name>/s" on the progress bar,
      "<items_name>_per_second" in the summaries.
    is_chief: whether this worker writes summaries and runs `after_epoch`.
    verbose: print a progress bar.
    log_every: steps between the per-step loss summaries.

  Returns:
    Whether any step ran.
  """
  ran = False
  last_save = time.time()
  step_now = lambda: int(global_step.numpy())
  for epoch in range(schedule.epoch_at(step_now()), len(schedule)):
    steps = schedule.steps[epoch]
    first = step_now() - schedule.start(epoch)
    with hooks.guard():
      iterator = iter(hooks.dataset(epoch))
    progbar = keras.utils.Progbar(steps, verbose=1 if verbose else 0,
                                  stateful_metrics=[f"{items_name}/s"])
    if verbose:
      print(hooks.title(epoch), flush=True)
    train_step = hooks.step(epoch)
    start, losses = time.perf_counter(), []
    for i in range(first, steps):
      with hooks.guard():
        loss = float(train_step(iterator))
      losses.append(loss)
      rate = (i + 1 - first) * items_per_step / (time.perf_counter() - start)
      progbar.update(i + 1, [("loss", loss), (f"{items_name}/s", rate)])
      step = step_now()
      if is_chief and writer is not None and step % log_every == 0:
        with writer.as_default(step=step):
          tf.summary.scalar("loss_per_step", loss)
      if (checkpoint_secs and i + 1 < steps and
          time.time() - last_save > checkpoint_secs):
        save()
        last_save = time.time()
    ran = ran or bool(losses)
    seconds = time.perf_counter() - start
    save()
    last_save = time.time()
    if not is_chief:
      continue
    mean = float(np.mean(losses)) if losses else float("nan")
    rate = len(losses) * items_per_step / max(seconds, 1e-9)
    if writer is not None:
      with writer.as_default(step=step_now()):
        tf.summary.scalar("loss", mean)
        for name, value in hooks.epoch_scalars().items():
          tf.summary.scalar(name, value)
        tf.summary.scalar(f"{items_name}_per_second", rate)
        tf.summary.scalar("epoch", epoch + 1)
      writer.flush()
    hooks.after_epoch(epoch, mean, rate)
  return ran

