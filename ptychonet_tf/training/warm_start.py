"""Warm start: a model's starting weights from another run or an export.

`load` is the one way weights that were not this run's own enter a model
(`--init_from`, `--fine_tune`): from a run directory (its latest
checkpoint), a checkpoint prefix, or a SavedModel export of this package (an
--export_dir or one version of it). Only the model's weights are read; the
optimizers and the step start afresh.
"""
import os

import tensorflow as tf

from ptychonet_tf.model import export as export_lib
from ptychonet_tf.training import run_dir
from ptychonet_tf.utils.errors import UserError


def _require_pattern_size(there, probe_shape, flag, what, data_dir):
  """Raises UserError unless patterns of size `there` ([h, w]; None:
  unknown, accepted), described by `what`, are `probe_shape`."""
  shape = list(probe_shape)
  if there and list(there) != shape:
    raise UserError(
        f"{flag}: {what} {there[0]}x{there[1]} patterns, {data_dir} has "
        f"{shape[0]}x{shape[1]} (another geometry), so its weights do not "
        f"fit; use a new --model_dir")


def _from_checkpoint(model, checkpoint, dataset, flag, source, data_dir):
  geometry = (dataset or {}).get("geometry") or {}
  _require_pattern_size(geometry.get("probe_shape"), model.probe_shape, flag,
                        f"the run in {source} was trained on", data_dir)
  try:
    status = tf.train.Checkpoint(model=model).read(checkpoint)
    status.assert_existing_objects_matched()
    status.expect_partial()  # the optimizers and the step start afresh
  except run_dir.DAMAGED_CHECKPOINT_ERRORS:
    raise UserError(f"{flag}: checkpoint {checkpoint} cannot be read "
                    f"(truncated or damaged)") from None
  except run_dir.CHECKPOINT_ERRORS:
    raise UserError(
        f"{flag}: checkpoint {checkpoint} does not fit the network these "
        f"flags build (other --base_channels, --depth, --max_channels or "
        f"refinement flags than its {run_dir.FLAGS_FILE}?)") from None
  return {"checkpoint": checkpoint, "dataset": dataset,
          "step": run_dir.checkpoint_step(checkpoint)}


def _from_saved_model(model, source, flag, data_dir):
  path, probe_shape, weights = export_lib.read_weights(source)
  _require_pattern_size(probe_shape, model.probe_shape, flag,
                        f"the SavedModel {path} takes", data_dir)
  mine = model.variables
  fits = len(mine) == len(weights) and all(
      tuple(v.shape) == w.shape for v, w in zip(mine, weights))
  if not fits:
    raise UserError(
        f"{flag}: the SavedModel {path} does not fit the network these "
        f"flags build (other --base_channels, --depth, --max_channels or "
        f"refinement flags; an export with --keep_refine_steps keeps fewer "
        f"steps than --refine_steps)")
  for variable, value in zip(mine, weights):
    variable.assign(value)
  version = os.path.basename(os.path.normpath(path))
  return {"saved_model": path, "dataset": None,
          "step": int(version) if version.isdigit() else None}


def load(model, source, flag, data_dir, dataset=None):
  """Copies the weights of `source` into a built `model`.

  Args:
    model: a built PtychoNet.
    source: a run directory (its latest checkpoint), a checkpoint prefix
      (`.../ckpt-STEP`) or a SavedModel export (an export dir or a version).
    flag: the request ("--init_from", "--fine_tune"), named in errors.
    data_dir: the dataset trained on, named in errors.
    dataset: the dataset record of the run that wrote a checkpoint prefix
      (None: read from the run directory's run.json).

  Returns:
    What run.json records about the weights: {"checkpoint" or
    "saved_model": path, "dataset": the source run's dataset record (None
    for an export), "step": its step (an export: its version)}.

  Raises:
    UserError: no such source, patterns of another size, or weights that
      do not fit the model.
  """
  if os.path.isfile(source + ".index"):
    return _from_checkpoint(model, source, dataset, flag,
                            os.path.dirname(source), data_dir)
  if not os.path.isdir(source):
    raise UserError(f"{flag}={source} is not a directory; expected the "
                    f"--model_dir of an earlier training run or a SavedModel "
                    f"export")
  checkpoint = run_dir.latest_checkpoint(source)
  if checkpoint is not None:
    recorded = run_dir.read_run_file(source)
    return _from_checkpoint(model, checkpoint,
                            recorded["dataset"] if recorded else dataset,
                            flag, source, data_dir)
  if export_lib.is_saved_model(source):
    return _from_saved_model(model, source, flag, data_dir)
  raise UserError(f"{flag}={source} holds no checkpoint and no SavedModel; "
                  f"expected the --model_dir of an earlier training run or "
                  f"an --export_dir")


def describe(flag, source, data_dir):
  """The line that says where a warm start's weights came from."""
  if flag == "--fine_tune":
    trained_on = (source["dataset"] or {}).get("data_dir", "another dataset")
    return (f"fine-tuning the weights of step {source['step']} (trained on "
            f"{trained_on}) on {data_dir}, from step 0")
  weights = (f"the SavedModel {source['saved_model']}"
             if "saved_model" in source else
             f"step {source['step']} of {os.path.dirname(source['checkpoint'])}")
  return f"starting from the weights of {weights}, at step 0"
