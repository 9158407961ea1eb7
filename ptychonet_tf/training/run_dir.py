"""The run directory (model_dir) of a training run.

  flags.txt          the resolved flags of the latest start (cli/train.py)
  model.json         PtychoNet.get_config(): geometry layout, ranges, width
  geometry.npz       probe, layout and object shape of the training data
  checkpoint, ckpt-STEP.*   tf.train.CheckpointManager checkpoints
  train/, eval/      TensorBoard event files
  export/<version>/  SavedModel (default export location)

`load_trained_model` rebuilds the model from model.json and restores the
latest checkpoint, so export needs nothing but the run directory.
"""
import json
import os

import numpy as np
import tensorflow as tf

from ptychonet_tf.utils import files
from ptychonet_tf.utils.errors import UserError
from ptychonet_tf.model import network
from ptychonet_tf.physics.geometry import Geometry

MODEL_FILE = "model.json"
GEOMETRY_FILE = "geometry.npz"
FLAGS_FILE = "flags.txt"


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
  try:
    with open(model_path) as f:
      config = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f"{model_path} is unreadable ({e})")
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
  except (tf.errors.OpError, ValueError, AssertionError) as e:
    raise UserError(f"checkpoint {path} does not match {model_path} ({e})")
  return model, geometry, checkpoint_step(path)
