"""The run directory (model_dir) of a training run.

  run.json           the dataset this run trains on (written at its first
                     start); a start on another dataset is refused
  flags.txt          the resolved flags of the latest start (cli/train.py)
  model.json         PtychoNet.get_config(): geometry layout, ranges, width
  geometry.npz       probe, layout and object shape of the training data
  checkpoint, ckpt-STEP.*   tf.train.CheckpointManager checkpoints
  train/, eval/      TensorBoard event files
  export/<version>/  SavedModel (default export location)
  previous-<time>/   an earlier run, moved aside by --restart or --fine_tune

`load_trained_model` rebuilds the model from model.json and restores the
latest checkpoint, so export needs nothing but the run directory.
"""
import hashlib
import json
import os
import time

import numpy as np
import tensorflow as tf

from ptychonet_tf.utils import files
from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.model import network
from ptychonet_tf.physics.geometry import Geometry

MODEL_FILE = "model.json"
GEOMETRY_FILE = "geometry.npz"
FLAGS_FILE = "flags.txt"
RUN_FILE = "run.json"
PREVIOUS_PREFIX = "previous-"
# The settings of model.json that a checkpoint depends on or that change what
# the network computes; compute_policy (mixed precision) may change on resume.
NETWORK_KEYS = ("base_channels", "depth", "max_channels", "stitch_method",
                "stitch_weighting", "amplitude_range", "phase_range",
                "probe_shape", "num_positions", "object_shape",
                "refine_steps", "refine_filters", "refine_groups",
                "refine_inertia", "refine_smoothing",
                "architecture", "input_norm")
# What model.json files written before a setting existed mean by its absence.
NETWORK_DEFAULTS = {"refine_steps": 0, "refine_filters": 0, "refine_groups": 1,
                    "refine_inertia": 1e-3, "refine_smoothing": 0,
                    "architecture": "paper", "input_norm": "log"}


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
  model = network.PtychoNet.from_config(dict(config, compute_policy="float32"))
  n, (h, w) = model.num_positions, model.probe_shape
  model(np.zeros([1, n, h, w], np.float32))
  try:
    status = tf.train.Checkpoint(model=model).read(path)
    status.assert_existing_objects_matched()
    status.expect_partial()
  except (tf.errors.OpError, ValueError, AssertionError):
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


def network_settings(model_config):
  """The NETWORK_KEYS of a PtychoNet config (model.json), JSON-normalised."""
  config = json.loads(json.dumps(model_config))
  settings = {k: config.get(k, NETWORK_DEFAULTS.get(k)) for k in NETWORK_KEYS}
  settings["stitch_weighting"] = (
      "uniform" if config.get("stitch_weights") is None else "probe")
  if config.get("layout") is not None:
    settings["num_positions"] = len(config["layout"])
  return settings


def read_model_file(model_dir):
  """The model.json of a run directory, or None when there is none."""
  path = os.path.join(model_dir, MODEL_FILE)
  if not os.path.isfile(path):
    return None
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f"{path} is unreadable ({e})")


def network_differences(stored_config, new_config):
  """"key: A there, B here" for each network setting that differs."""
  old, new = network_settings(stored_config), network_settings(new_config)
  return [f"{k}: {_short(old[k]) or '...'} there, "
          f"{_short(new[k]) or '...'} here"
          for k in NETWORK_KEYS if old[k] != new[k]]


def run_entries(model_dir):
  """The names in model_dir that belong to its current run (not the
  previous-* folders of earlier runs); [] when it does not exist."""
  if not os.path.isdir(model_dir):
    return []
  return sorted(n for n in os.listdir(model_dir)
                if not n.startswith((PREVIOUS_PREFIX, "." + PREVIOUS_PREFIX)))


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
