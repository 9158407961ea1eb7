"""Simulated scans: random objects from image pools through the forward model."""
import dataclasses
from typing import Optional

import numpy as np

from ptychonet_tf.physics import family as family_lib
from ptychonet_tf.physics import objects
from ptychonet_tf.physics.geometry import GeometryConfig

SPLITS = ("train", "test")


@dataclasses.dataclass(frozen=True)
class SimulationConfig:
  """Everything that defines a simulated scan besides the images and seed.

  photons: mean photon count per diffraction pattern for Poisson noise; 0
  means noise-free amplitudes.
  family: None (every scan in `geometry`), or a family of geometries
    (`physics.family`): each scan draws its own probe and positions, and
    `geometry` is the nominal one (its probe size and its object, the
    largest a drawn scan covers; a model trained on the family serves it
    as its fixed geometry).
  """
  geometry: GeometryConfig = GeometryConfig()
  object: objects.ObjectConfig = objects.ObjectConfig()
  photons: float = 0.0
  family: Optional[family_lib.FamilyConfig] = None


class Simulator:
  """Computes the amplitudes of objects for one fixed geometry.

  The forward model runs in a tf.function specialised to the geometry's
  probe and layout, over a batch of objects at once.
  """

  def __init__(self, geometry, photons=0.0):
    self.geometry = geometry
    self.photons = float(photons)
    # TensorFlow starts only here, so that configs (and the command lines
    # that build them) import without it.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from ptychonet_tf.physics import forward  # pylint: disable=g-import-not-at-top
    probe = tf.constant(geometry.probe)
    layout = tf.constant(geometry.layout)
    big_h, big_w = geometry.object_shape
    self._forward = tf.function(
        lambda obj: forward.diffraction_amplitudes(obj, probe, layout),
        input_signature=[tf.TensorSpec([None, big_h, big_w], tf.complex64)])
    self._poisson = forward.poisson_amplitudes

  def amplitudes(self, objs, seed=0):
    """complex64 [B, H, W] -> float32 numpy [B, N, h, w] (noisy if photons > 0)."""
    amps = self._forward(np.asarray(objs, np.complex64)).numpy()
    return self._noisy(amps, seed)

  def _noisy(self, amps, seed):
    if self.photons > 0:
      amps = np.stack([self._poisson(a, self.photons, (seed, i))
                       for i, a in enumerate(amps)])
    return amps

  def scan_amplitudes(self, obj, probe, layout, seed=0):
    """One object in another geometry (a family's scan): complex64 [H, W],
    its probe [h, w] and layout [N, 4] -> float32 numpy [N, h, w]."""
    from ptychonet_tf.physics import forward  # pylint: disable=g-import-not-at-top
    amps = forward.diffraction_amplitudes(
        np.asarray(obj, np.complex64)[None], probe, layout).numpy()
    return self._noisy(amps, seed)[0]


def scan_rng(seed, split, index):
  """The generator for scan `index` of `split`: depends only on these three."""
  return np.random.default_rng([int(seed), SPLITS.index(split), int(index)])


def random_object(pool, object_shape, config, rng, load):
  """One complex object from two random images of `pool` (random views).

  Args:
    pool: sequence of image references (e.g. `data.images.ImageRef`).
    object_shape: (H, W).
    config: objects.ObjectConfig.
    rng: numpy Generator.
    load: callable(reference) -> float [h, w] image in [0, 1] (e.g.
      `data.images.load_image`, or a caching `data.images.ImageCache`).

  Returns:
    complex64 [H, W].
  """
  def pick():
    ref = pool[int(rng.integers(len(pool)))]
    return objects.random_view(load(ref), object_shape, rng)

  amplitude = pick() if config.mode == "complex" else None
  phase = pick()
  return objects.make_object(amplitude, phase, config)
