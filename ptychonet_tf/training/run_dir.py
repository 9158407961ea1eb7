"""The run directory (model_dir) of a training run, and its rules.

  run.json           the dataset this run trains on (written at its first
                     start) and where its starting weights came from
  flags.txt          the resolved flags of the latest start (cli/train.py)
  model.json         PtychoNet.get_config(): geometry layout, ranges, width
  geometry.npz       probe, layout and object shape of the training data
  checkpoint, ckpt-STEP.*   tf.train.CheckpointManager checkpoints
  train/, eval/      TensorBoard event files
  results.json       the final held-out metrics
  export/<version>/  SavedModel (default export location)
  previous-<time>/   an earlier run, moved aside by --restart or --fine_tune
  .lock              held by the training job that runs in it (`locked`)

The rules of a start are `plan` (which reads files and writes none, so it is
tested without training a model): resume, start afresh, start from other
weights (`--init_from`, `--fine_tune`), move the old run aside, or refuse in
one line; `apply` then does the file part. `load_trained_model` rebuilds the
model from model.json and restores the latest checkpoint, so export needs
nothing but the run directory.
"""
import contextlib
import dataclasses
import hashlib
import json
import os
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from ptychonet_tf import settings
from ptychonet_tf.data import writer
from ptychonet_tf.utils import files
from ptychonet_tf.utils import locks
from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.model import network
from ptychonet_tf.physics.geometry import Geometry

MODEL_FILE = "model.json"
GEOMETRY_FILE = "geometry.npz"
FLAGS_FILE = "flags.txt"
RUN_FILE = "run.json"
RESULTS_FILE = "results.json"
PREVIOUS_PREFIX = "previous-"
# What a run writes into model_dir (besides EXPORT_DIR_NAME and the
# checkpoints); anything else is not a run's, and --restart will not move it.
RUN_FILES = (RUN_FILE, FLAGS_FILE, MODEL_FILE, GEOMETRY_FILE, RESULTS_FILE,
             "checkpoint", "train", "eval", "export")
# Name prefixes of checkpoints (and their temp files) and of the scratch
# folders of non-chief workers.
RUN_PREFIXES = ("ckpt-", "checkpoint.", ".scratch-")
# The geometry keys of model.json a run depends on.
GEOMETRY_KEYS = ("probe_shape", "num_positions", "object_shape")
# The settings of model.json a checkpoint depends on or that change what the
# network computes: the compared settings of NetworkConfig (not its
# precision, which may change on resume) and the geometry.
NETWORK_KEYS = tuple(
    item.name for item in settings.settings_of(network.NetworkConfig)
    if item.compared) + GEOMETRY_KEYS
# What reading a checkpoint that does not fit, or is truncated, raises.
CHECKPOINT_ERRORS = (tf.errors.OpError, ValueError, AssertionError,
                     IndexError)
# Of those, what a truncated or damaged checkpoint raises.
DAMAGED_CHECKPOINT_ERRORS = (IndexError, tf.errors.DataLossError,
                             tf.errors.OutOfRangeError)


def save_model_files(model_dir, model, geometry):
  """Writes model.json and geometry.npz."""
  os.makedirs(model_dir, exist_ok=True)
  files.write_text(os.path.join(model_dir, MODEL_FILE),
                   json.dumps(model.get_config(), indent=1))
  geometry.save(os.path.join(model_dir, GEOMETRY_FILE))


def checkpoint_step(path):
  """The step of a checkpoint prefix `.../ckpt-STEP`."""
  return int(path.rsplit("-", 1)[1])


def latest_checkpoint(model_dir):
  return tf.train.latest_checkpoint(model_dir) if os.path.isdir(model_dir) \
      else None


def load_trained_model(model_dir):
  """(model, geometry, step) of the latest checkpoint of a run directory.

  The model is a float32 PtychoNet (compute_policy "float32", whatever
  precision it was trained in); the global Keras dtype policy is not touched.
  Raises UserError when `model_dir` holds no trained model.
  """
  if not model_dir or not os.path.isdir(model_dir):
    raise UserError(f"model_dir {model_dir} does not exist; train a model "
                    f"with python -m ptychonet_tf.train --model_dir=...")
  model_path = os.path.join(model_dir, MODEL_FILE)
  path = latest_checkpoint(model_dir)
  if not os.path.isfile(model_path) or path is None:
    raise UserError(f"model_dir {model_dir} holds no trained model "
                    f"({MODEL_FILE} and a checkpoint); train one first with "
                    f"python -m ptychonet_tf.train --model_dir={model_dir}")
  config = read_model_file(model_dir)
  geometry = Geometry.load(os.path.join(model_dir, GEOMETRY_FILE))
  # float32 compute whatever the run trained in (the variables are float32
  # in both policies, so its checkpoints fit).
  try:
    model = network.PtychoNet.from_config(
        dict(config, compute_policy="float32"))
    n, (h, w) = model.num_positions, model.probe_shape
    model(np.zeros([1, n, h, w], np.float32))
  except (TypeError, ValueError, KeyError, IndexError) as e:
    raise UserError(f"{model_path} is not a network config this package "
                    f"builds ({type(e).__name__}: "
                    f"{str(e).splitlines()[0] if str(e) else ''})") from None
  try:
    status = tf.train.Checkpoint(model=model).read(path)
    status.assert_existing_objects_matched()
    status.expect_partial()
  except CHECKPOINT_ERRORS:
    raise UserError(f"checkpoint {path} does not fit the network of "
                    f"{model_path} (files of two runs mixed?)")
  return model, geometry, checkpoint_step(path)


# The dataset identity of a run (run.json).


def geometry_fingerprint(geometry):
  """A short hash of a Geometry's probe, layout and object shape."""
  h = hashlib.sha256()
  h.update(np.ascontiguousarray(geometry.probe, np.complex64).tobytes())
  h.update(np.ascontiguousarray(geometry.layout, np.int32).tobytes())
  h.update(np.asarray(geometry.object_shape, np.int32).tobytes())
  return h.hexdigest()[:16]


def dataset_record(info):
  """What run.json records about a dataset (a pipeline.DatasetInfo).

  Returns:
    {"data_dir": absolute path, "identity": dataset.json's "identity" (the
    writer's settings; None for datasets without one), "geometry":
    {"num_positions", "probe_shape", "object_shape", "fingerprint"}}.
  """
  return {"data_dir": os.path.abspath(info.data_dir),
          "identity": info.identity,
          "geometry": geometry_record(info.geometry)}


def geometry_record(geometry):
  """The "geometry" entry of `dataset_record`."""
  return {"num_positions": geometry.num_positions,
          "probe_shape": list(geometry.probe_shape),
          "object_shape": [int(s) for s in geometry.object_shape],
          "fingerprint": geometry_fingerprint(geometry)}


def _differences(old, new, prefix=""):
  """Dotted keys where two JSON values differ (dicts compared key by key)."""
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for key in sorted(set(old) | set(new)):
      out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
    return out
  return [] if old == new else [prefix.rstrip(".")]


def _short(value):
  text = json.dumps(value)
  return text if len(text) <= 24 else None


def dataset_differences(recorded, current):
  """How two dataset records differ: a list of "key: A there, B here".

  Datasets with the same writer identity and geometry are the same data
  wherever they lie; without an identity, the data_dir and the geometry
  must both match. An empty list means the same dataset.
  """
  old_id, new_id = recorded.get("identity"), current.get("identity")
  # The geometry first: it decides whether the model fits.
  geometry = [k for k in _differences(recorded.get("geometry"),
                                     current["geometry"]) if k]
  order = ("probe_shape", "num_positions", "object_shape")
  geometry.sort(key=lambda k: order.index(k) if k in order else len(order))
  keys = ["geometry." + k for k in geometry if k != "fingerprint"]
  if geometry == ["fingerprint"]:
    keys.append("geometry (probe or scan positions)")
  if old_id is not None and new_id is not None:
    keys += ["identity." + k if k else "identity"
             for k in _differences(old_id, new_id)]
  elif (os.path.realpath(recorded.get("data_dir") or "") !=
        os.path.realpath(current["data_dir"])):
    keys.append("data_dir")
  out = []
  for key in keys:
    old, new = recorded, current
    for part in key.split("."):
      old = old.get(part) if isinstance(old, dict) else None
      new = new.get(part) if isinstance(new, dict) else None
    name = key.split(".", 1)[1] if key.startswith(("identity.", "geometry.")) \
        else key
    if _short(old) and _short(new):
      out.append(f"{name}: {_short(old)} there, {_short(new)} here")
    else:
      out.append(f"{name} differs")
  return out


def older_run_differences(model_dir, current):
  """`dataset_differences` for a run directory without run.json (written
  before it existed): only its geometry.npz can tell; [] when it has none."""
  path = os.path.join(model_dir, GEOMETRY_FILE)
  if not os.path.isfile(path):
    return []
  recorded = dict(current, identity=None,
                  geometry=geometry_record(Geometry.load(path)))
  return dataset_differences(recorded, current)


def read_run_file(model_dir):
  """The contents of <model_dir>/run.json, or None when there is none."""
  path = os.path.join(model_dir, RUN_FILE)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      run = json.load(f)
    run["dataset"]["geometry"]  # pylint: disable=pointless-statement
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise UserError(f"{path} is unreadable ({e}); move it away to adopt the "
                    f"run directory anew, or use --restart")
  return run


def write_run_file(model_dir, record, **extra):
  """Writes <model_dir>/run.json (atomically) for a run on dataset `record`."""
  run = {"dataset": record,
         "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **extra}
  files.write_json(os.path.join(model_dir, RUN_FILE), run, make_parent=True)
  return run


def network_settings(model_config, source=MODEL_FILE):
  """The NETWORK_KEYS of a PtychoNet config (model.json), JSON-normalised;
  a setting model.json lacks takes its default. `source` names the config
  in errors."""
  config = settings.to_json(model_config)
  weighting = "uniform" if config.get("stitch_weights") is None else "probe"
  try:
    net = network.NetworkConfig.from_model_settings(config, weighting, False)
  except (TypeError, ValueError) as e:
    raise UserError(f"{source} holds a setting of the wrong type ({e}); "
                    f"use --restart or a new --model_dir") from None
  out = settings.to_json(settings.values(net, lambda item: item.compared))
  out.update({key: config.get(key) for key in GEOMETRY_KEYS})
  if config.get("layout") is not None:
    out["num_positions"] = len(config["layout"])
  return out


def read_model_file(model_dir):
  """The model.json of a run directory, or None when there is none."""
  path = os.path.join(model_dir, MODEL_FILE)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f"{path} is unreadable ({e})") from None
  if not isinstance(config, dict):
    raise UserError(f"{path} is not a model config (a JSON object)")
  return config


def network_differences(stored_config, new_config, source=MODEL_FILE):
  """"key: A there, B here" for each network setting that differs
  (`source` names the stored config in errors)."""
  old = network_settings(stored_config, source)
  new = network_settings(new_config)
  return [f"{k}: {_short(old[k]) or '...'} there, "
          f"{_short(new[k]) or '...'} here"
          for k in NETWORK_KEYS if old[k] != new[k]]


def run_entries(model_dir):
  """The names in model_dir that belong to its current run (not the
  previous-* folders of earlier runs, nor the lock); [] when it does not
  exist."""
  if not os.path.isdir(model_dir):
    return []
  return sorted(n for n in os.listdir(model_dir)
                if not n.startswith((PREVIOUS_PREFIX, "." + PREVIOUS_PREFIX))
                and n != locks.LOCK_NAME)


def foreign_entries(model_dir):
  """The names of `run_entries` that no training run writes (a dataset's
  files, a user's), which --restart must not move aside."""
  def is_run_file(name):
    name = name[:-len(".tmp")] if name.endswith(".tmp") else name
    return name in RUN_FILES or name.startswith(RUN_PREFIXES)
  return [n for n in run_entries(model_dir) if not is_run_file(n)]


def _check_movable(model_dir):
  """Raises UserError unless everything of model_dir's current run is a
  training run's (so that moving it aside moves nothing else)."""
  names = run_entries(model_dir)
  shards = [n for n in names if n.endswith(".tfrecord")]
  if writer.INFO_FILE in names or shards:
    found = ", ".join(([writer.INFO_FILE] if writer.INFO_FILE in names
                       else []) + shards[:1])
    raise UserError(f"model_dir {model_dir} holds a dataset ({found}); "
                    f"--restart and --fine_tune move a run aside, never a "
                    f"dataset: use another --model_dir")
  foreign = foreign_entries(model_dir)
  if foreign:
    more = ", ..." if len(foreign) > 3 else ""
    raise UserError(f"model_dir {model_dir} holds files that are not a "
                    f"training run's ({', '.join(foreign[:3])}{more}); "
                    f"--restart and --fine_tune move only runs aside: move "
                    f"them away or use another --model_dir")


def interrupted_move(model_dir):
  """A .previous-* folder left by a move_run_aside that was killed, or None."""
  if not os.path.isdir(model_dir):
    return None
  partial = sorted(n for n in os.listdir(model_dir)
                   if n.startswith("." + PREVIOUS_PREFIX))
  return os.path.join(model_dir, partial[0]) if partial else None


def move_run_aside(model_dir):
  """Moves the current run of model_dir into model_dir/previous-<time>/.

  Every entry but earlier previous-* folders moves (checkpoints, logs,
  model files, exports), first into a hidden .previous-<time>/ that is
  renamed when complete; a move that was killed is finished by the next
  call. Nothing is deleted.

  Returns:
    The new folder, or None when there was nothing to move.
  """
  partial = interrupted_move(model_dir)
  names = run_entries(model_dir)
  if not names and partial is None:
    return None
  stamp = time.strftime("%Y%m%d-%H%M%S")
  if partial is None:
    partial = os.path.join(model_dir, f".{PREVIOUS_PREFIX}{stamp}")
    os.makedirs(partial)
  for name in names:
    os.replace(os.path.join(model_dir, name), os.path.join(partial, name))
  final = os.path.join(model_dir, os.path.basename(partial)[1:])
  suffix = 1
  while os.path.exists(final):
    final = os.path.join(model_dir, f"{PREVIOUS_PREFIX}{stamp}-{suffix}")
    suffix += 1
  os.replace(partial, final)
  return final


# The rules of a start.


def same_path(a, b):
  """Whether two paths name one folder (`dir/` and `dir`, relative and
  absolute, through links)."""
  return os.path.realpath(a) == os.path.realpath(b)


@dataclasses.dataclass
class Start:
  """What a start of training in model_dir does (`plan`).

  Attributes:
    resume: the checkpoint of this run to restore and continue from, or None.
    weights_from: where the starting weights come from (`warm_start.load`:
      a run directory, a checkpoint prefix or a SavedModel), or None; the
      optimizer starts afresh at step 0.
    weights_flag: "--init_from" or "--fine_tune": the request, for errors.
    weights_dataset: the dataset record of the run the weights come from
      (--fine_tune; None: read from the source's run.json).
    record: whether run.json is (re)written for a new run.
    record_key: the run.json entry ("initialized_from", "fine_tuned_from")
      that records where the weights came from; None for none.
    record_extra: more entries of that record (the --init_from request).
    move_aside: move the current run to previous-<time>/ first.
    notes: lines to print.
  """
  resume: Optional[str] = None
  weights_from: Optional[str] = None
  weights_flag: Optional[str] = None
  weights_dataset: Optional[dict] = None
  record: bool = False
  record_key: Optional[str] = None
  record_extra: dict = dataclasses.field(default_factory=dict)
  move_aside: bool = False
  notes: list = dataclasses.field(default_factory=list)


def _recorded_weights(started):
  """The checkpoint or SavedModel an "initialized_from" record names, when
  it still exists (where the weights are after a move aside)."""
  checkpoint = started.get("checkpoint")
  if checkpoint and os.path.isfile(checkpoint + ".index"):
    return checkpoint
  saved_model = started.get("saved_model")
  if saved_model and os.path.isdir(saved_model):
    return saved_model
  return None


def plan(model_dir, dataset, model_config, restart=False, fine_tune=False,
         init_from=None):
  """Decides what a start of training in model_dir does; writes nothing.

  Args:
    model_dir: the run directory (need not exist).
    dataset: the `dataset_record` of the dataset to train on.
    model_config: the config (as model.json holds it) of the network the
      flags build.
    restart, fine_tune, init_from: the requests of TrainConfig.

  Returns:
    A Start.

  Raises:
    UserError (one line) for a model_dir that is a file or holds a dataset;
    a move aside that was interrupted (unless `restart`); a run on another
    dataset (unless `restart` or `fine_tune`); other network settings than
    its model.json on the same dataset; --init_from where a run of another
    source is (unless `restart`); --fine_tune without a checkpoint; and
    --restart or --fine_tune where model_dir holds files that are not a
    run's.
  """
  if os.path.exists(model_dir) and not os.path.isdir(model_dir):
    raise UserError(f"model_dir {model_dir} is a file; expected a directory")
  names = run_entries(model_dir)
  if writer.INFO_FILE in names:
    raise UserError(f"model_dir {model_dir} holds a dataset "
                    f"({writer.INFO_FILE}); a run must not write into it: "
                    f"use another --model_dir")
  partial = interrupted_move(model_dir)
  if partial and not restart:
    raise UserError(f"model_dir {model_dir} holds {partial}, an old run "
                    f"whose move aside was interrupted; re-run with "
                    f"--restart to finish it (nothing is deleted)")
  recorded_run = read_run_file(model_dir) or {}
  recorded = recorded_run.get("dataset")
  checkpoint = latest_checkpoint(model_dir)
  stored_model = read_model_file(model_dir)
  holds_run = (recorded is not None or checkpoint is not None or
               stored_model is not None)
  start = Start()
  started = recorded_run.get("initialized_from") or {}
  # A run this --init_from started resumes like any other (the same command
  # after a kill); one killed before its first checkpoint starts again from
  # the weights it started from.
  same_init = bool(init_from and started.get("run") and
                   same_path(started["run"], init_from))
  if init_from and (restart or not same_init or checkpoint is None):
    if holds_run and not restart and not same_init:
      raise UserError(
          f"--init_from starts a new run, but model_dir {model_dir} holds "
          f"one; use a new --model_dir, or --restart to move it aside")
    start.weights_from = init_from
    if same_init and not restart:
      start.weights_from = _recorded_weights(started) or init_from
    start.weights_flag = "--init_from"
    start.record, start.record_key = True, "initialized_from"
    start.record_extra = {"run": os.path.abspath(init_from)}
    start.move_aside = restart and bool(names or partial)
  elif restart:
    start.record, start.move_aside = True, bool(names or partial)
  elif not holds_run:
    if fine_tune:
      raise UserError(f"--fine_tune: model_dir {model_dir} holds no "
                      f"checkpoint to start from")
    start.record = True  # a new run
  else:
    if recorded is not None:
      differences = dataset_differences(recorded, dataset)
    else:  # from before run.json: adopt it if its geometry is this one's
      differences = older_run_differences(model_dir, dataset)
    if not differences:
      if recorded is None:
        start.notes.append(
            f"note: model_dir {model_dir} has no {RUN_FILE} (an older run); "
            f"recording {dataset['data_dir']} as its dataset")
        start.record = True
      if stored_model is not None:
        changed = network_differences(
            stored_model, model_config,
            os.path.join(model_dir, MODEL_FILE))
        if changed:
          raise UserError(
              f"model_dir {model_dir} was trained with other network "
              f"settings ({'; '.join(changed[:3])}); use the flags in its "
              f"{FLAGS_FILE}, a new --model_dir, or --restart")
      start.resume = checkpoint
    elif fine_tune:
      if checkpoint is None:
        raise UserError(f"--fine_tune: model_dir {model_dir} holds no "
                        f"checkpoint to start from")
      start.weights_from, start.weights_flag = checkpoint, "--fine_tune"
      start.weights_dataset = recorded
      start.record, start.record_key = True, "fine_tuned_from"
      start.move_aside = True
    else:
      where = (recorded or {}).get("data_dir") or "another dataset"
      more = ", ..." if len(differences) > 2 else ""
      raise UserError(
          f"model_dir {model_dir} holds a run on another dataset ({where}; "
          f"{', '.join(differences[:2])}{more}); use a new --model_dir, "
          f"--fine_tune to start from its weights, or --restart to start "
          f"over (both keep the old run in {PREVIOUS_PREFIX}<time>/)")
  if start.move_aside:
    _check_movable(model_dir)
  return start


def _relocate(path, model_dir, aside):
  """`path` after model_dir's current run moved into `aside`: the same
  file there when it lay in that run, else unchanged."""
  if not path:
    return path
  relative = os.path.relpath(os.path.realpath(path),
                             os.path.realpath(model_dir))
  first = relative.split(os.sep)[0]
  if relative.startswith(os.pardir) or first in (os.curdir, locks.LOCK_NAME) \
      or first.startswith((PREVIOUS_PREFIX, "." + PREVIOUS_PREFIX)):
    return path
  return os.path.join(aside, relative)


def apply(model_dir, start, dataset, source=None):
  """The file part of a Start: moves the old run aside and writes run.json.

  Args:
    model_dir: the run directory.
    start: the Start of `plan`.
    dataset: the `dataset_record` of the dataset to train on.
    source: the record of the starting weights (`warm_start.load`), or None.

  Returns:
    Lines to print (where the old run went).
  """
  notes = []
  record = dict(start.record_extra, **(source or {}))
  if start.move_aside:
    aside = move_run_aside(model_dir)
    if aside:
      notes.append(f"moved the old run to {aside}")
      # The weights' files that lay in the old run are there now, not
      # where the new run writes its own.
      for key in ("checkpoint", "saved_model"):
        if record.get(key):
          record[key] = _relocate(record[key], model_dir, aside)
  if start.record:
    extra = {start.record_key: record} if start.record_key else {}
    write_run_file(model_dir, dataset, **extra)
  return notes


@contextlib.contextmanager
def locked(model_dir):
  """Holds model_dir's lock (`utils.locks`, purpose "train") while inside.

  A second job on the same model_dir is refused in one line naming this
  one's PID. A model_dir this call created is removed again when the job
  inside fails before writing anything into it.
  """
  created = not os.path.exists(model_dir)
  try:
    with locks.hold(model_dir, "train"):
      try:
        yield
      except BaseException:
        if created and os.listdir(model_dir) == [locks.LOCK_NAME]:
          os.remove(locks.lock_path(model_dir))
        raise
  finally:
    if created and os.path.isdir(model_dir) and not os.listdir(model_dir):
      os.rmdir(model_dir)
