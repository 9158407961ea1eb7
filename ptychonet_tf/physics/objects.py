"""Complex test objects built from grayscale images.

An object is complex64 [H, W]: amplitude * exp(1j * phase). Amplitude comes
from one image scaled to [amp_min, amp_max], phase from another image scaled
to [phase_min, phase_max] (the paper: [0.5, 1] and [-pi/3, 0]). In
"phase_only" mode the amplitude is a constant (the paper's cross-domain test
uses 0.5) and only the phase image is used.
"""
import dataclasses
import math

import numpy as np
from skimage import transform

from ptychonet_tf.utils.errors import UserError

OBJECT_MODES = ("complex", "phase_only")


@dataclasses.dataclass(frozen=True)
class ObjectConfig:
  """Value ranges of simulated objects."""
  amp_min: float = 0.5
  amp_max: float = 1.0
  phase_min: float = -math.pi / 3
  phase_max: float = 0.0
  mode: str = "complex"
  constant_amplitude: float = 0.5

  def __post_init__(self):
    if self.mode not in OBJECT_MODES:
      raise UserError(f"object mode {self.mode!r} is not one of {OBJECT_MODES}")
    if not 0.0 <= self.amp_min <= self.amp_max:
      raise UserError(f"amplitude range [{self.amp_min}, {self.amp_max}] must "
                      f"satisfy 0 <= amp_min <= amp_max")
    if not self.phase_min <= self.phase_max:
      raise UserError(f"phase range [{self.phase_min}, {self.phase_max}] must "
                      f"satisfy phase_min <= phase_max")


def normalise(image):
  """Min-max scales a 2-D image to [0, 1] (a constant image gives zeros)."""
  image = np.asarray(image, np.float64)
  lo, hi = image.min(), image.max()
  if hi - lo < 1e-12:
    return np.zeros_like(image)
  return (image - lo) / (hi - lo)


def random_view(image, shape, rng=None):
  """A crop of `image` resized to `shape`, with random zoom, flips and rotation.

  With rng=None the view is deterministic: the central crop of the largest
  region with the target aspect ratio, resized to `shape`.

  Args:
    image: float [h0, w0] grayscale.
    shape: (H, W) of the result.
    rng: numpy Generator or None.

  Returns:
    float64 [H, W].
  """
  big_h, big_w = shape
  k = int(rng.integers(4)) if rng is not None else 0
  need_h, need_w = (big_h, big_w) if k % 2 == 0 else (big_w, big_h)
  h0, w0 = image.shape
  # Largest crop with the target aspect ratio, shrunk by a random zoom.
  fit = min(h0 / need_h, w0 / need_w)
  zoom = rng.uniform(1.0, 1.6) if rng is not None else 1.0
  crop_h = max(1, min(h0, int(round(need_h * fit / zoom))))
  crop_w = max(1, min(w0, int(round(need_w * fit / zoom))))
  if rng is not None:
    y0 = int(rng.integers(h0 - crop_h + 1))
    x0 = int(rng.integers(w0 - crop_w + 1))
  else:
    y0, x0 = (h0 - crop_h) // 2, (w0 - crop_w) // 2
  crop = image[y0:y0 + crop_h, x0:x0 + crop_w]
  view = transform.resize(crop, (need_h, need_w), order=1, mode="reflect",
                          anti_aliasing=crop_h > need_h, preserve_range=True)
  if rng is not None:
    if rng.random() < 0.5:
      view = view[:, ::-1]
    view = np.rot90(view, k)
  return np.ascontiguousarray(view)


def make_object(amplitude_image, phase_image, config=ObjectConfig()):
  """Builds the complex object from two images of the object's shape.

  Args:
    amplitude_image: float [H, W] (ignored in phase_only mode; may be None).
    phase_image: float [H, W].
    config: ObjectConfig.

  Returns:
    complex64 [H, W].
  """
  phase = config.phase_min + (config.phase_max - config.phase_min) * normalise(
      phase_image)
  if config.mode == "phase_only":
    amplitude = np.full(phase.shape, config.constant_amplitude)
  else:
    if np.shape(amplitude_image) != phase.shape:
      raise UserError(f"amplitude image {np.shape(amplitude_image)} and phase "
                      f"image {phase.shape} must have the same shape")
    amplitude = config.amp_min + (config.amp_max - config.amp_min) * normalise(
        amplitude_image)
  return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def split_object(obj):
  """complex [..., H, W] -> (amplitude float32, phase float32)."""
  obj = np.asarray(obj)
  return np.abs(obj).astype(np.float32), np.angle(obj).astype(np.float32)
