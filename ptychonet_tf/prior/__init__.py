"""The learned image prior: a noise-level-conditioned denoiser (see docs/prior.md).

  denoise = prior.load()            # the weights shipped in prior/weights/
  y = denoise(x, sigma)             # x float32 [B, H, W] or [H, W] in ~[0, 1]

`load` returns a `PriorDenoiser` Keras layer: call it inside `tf.function`
(with `jit_compile=True` too), embed it in another Keras model, save it in
another SavedModel. `python -m ptychonet_tf.train_prior` trains one
(`training.py`), from random noisy patches (`data.py`).
"""
import json
import os

import numpy as np

from ptychonet_tf.utils import files
from ptychonet_tf.utils.errors import UserError

# The recommended prior, trained on redistributable images only (the
# embedded default photographs and procedural images); `make prior` remakes it.
DEFAULT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           "weights")
# The white-noise prior the shipped one was fine-tuned from (docs/prior.md):
# the better prior on noise-free sparse scans (docs/baselines.md).
BASE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "weights_base")
# Names `load` takes besides a folder.
NAMES = {"default": DEFAULT_DIR, "base": BASE_DIR}
CONFIG_FILE = "prior.json"
WEIGHTS_FILE = "prior.npz"


def load(path=None, dtype="float32", trainable=False, name="prior_denoiser"):
  """The denoiser of an exported prior, weights loaded.

  Args:
    path: a folder holding prior.json and prior.npz (a training run's
      --export_dir), or a name of NAMES ("default": the shipped prior,
      "base": the white-noise prior it was fine-tuned from); None: the
      shipped prior (`DEFAULT_DIR`).
    dtype: the layer's dtype policy ("float32", or "mixed_bfloat16").
    trainable: whether its weights train when it is part of another model.
    name: the layer's name.

  Returns:
    network.PriorDenoiser, built: call it as denoise(x, sigma) with x float32
    [batch, H, W] or [H, W] (H, W >= its `multiple`) and sigma a scalar or
    [batch]; it returns float32 of x's shape.

  Raises:
    UserError: the folder holds no prior, or its weights do not fit its
      network settings.
  """
  from ptychonet_tf.prior import network  # pylint: disable=g-import-not-at-top
  folder = DEFAULT_DIR if path is None else NAMES.get(path, path)
  config_path = os.path.join(folder, CONFIG_FILE)
  weights_path = os.path.join(folder, WEIGHTS_FILE)
  if not (os.path.isfile(config_path) and os.path.isfile(weights_path)):
    raise UserError(f"prior {folder} holds no {CONFIG_FILE} and "
                    f"{WEIGHTS_FILE}; expected the --export_dir of "
                    f"python -m ptychonet_tf.train_prior")
  try:
    with open(config_path) as f:
      info = json.load(f)
    settings = info["network"]
  except (OSError, ValueError, KeyError) as e:
    raise UserError(f"prior config {config_path} cannot be read ({e})")
  layer = network.PriorDenoiser(settings["channels"], settings["blocks"],
                                settings["use_bias"], dtype=dtype, name=name,
                                trainable=trainable)
  layer.build((None, None, None))
  with files.load_arrays(weights_path, f"prior weights {weights_path}") as z:
    arrays = [z[f"w{i:03d}"] for i in range(len(z.files))]
  if len(arrays) != len(layer.weights) or any(
      tuple(a.shape) != tuple(w.shape) for a, w in zip(arrays, layer.weights)):
    raise UserError(f"prior weights {weights_path} do not fit the network "
                    f"{settings} of {config_path}")
  for variable, value in zip(layer.weights, arrays):
    variable.assign(np.asarray(value, np.float32))
  return layer


def info(path=None):
  """The prior.json of an exported prior (None: the shipped one) as a dict."""
  folder = DEFAULT_DIR if path is None else path
  with open(os.path.join(folder, CONFIG_FILE)) as f:
    return json.load(f)
