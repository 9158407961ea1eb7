"""A family of scan geometries: a probe and a layout drawn per scan.

What a model that serves any scan (`PtychoNet.reconstruct_scan`, the
SavedModel's any_scan signature) trains on: every scan of a family dataset
(`make_tfrecords --family`) has its own probe and its own positions, drawn
here from a generator seeded per scan (`simulator.scan_rng`), so the bytes
depend only on the settings.

A draw (`draw_scan`):

- the probe: a kind of `FamilyConfig.probes` ("zone_plate", "pinhole", or
  "measured_like": a zone plate with a smooth random amplitude modulation
  and stronger aberrations, as a probe refined from measured data looks),
  a diameter from `diameter`, then defocus, astigmatism and coma from
  `defocus` and `aberration` (radians at the probe's RMS radius,
  `probe.aberrate`);
- the layout: a kind of `FamilyConfig.layouts` ("fermat", "mesh",
  "circles") whose nearest-neighbour distance is `spacing` times the probe
  diameter, over a random share `extent` of the largest object
  (`max_object`), jittered by up to `jitter` pixels;
- the object covers the positions (`layouts.layout_from_positions`, the
  frame `windows.scan_frame` gives the same scan at run time).
"""
import dataclasses
from typing import Tuple

import numpy as np

from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import probe as probe_lib
from ptychonet_tf.utils.errors import UserError

PROBES = ("zone_plate", "pinhole", "measured_like")
LAYOUTS = ("fermat", "mesh", "circles")
# Fewest positions of a drawn scan (the refinement's position groups need
# several).
MIN_POSITIONS = 8


@dataclasses.dataclass(frozen=True)
class FamilyConfig:
  """The ranges a family draws from (each (low, high), uniform)."""
  probes: Tuple[str, ...] = PROBES
  layouts: Tuple[str, ...] = LAYOUTS
  diameter: Tuple[float, float] = (0.35, 0.6)
  defocus: Tuple[float, float] = (-1.0, 1.0)
  aberration: Tuple[float, float] = (-0.4, 0.4)
  spacing: Tuple[float, float] = (0.2, 0.5)
  extent: Tuple[float, float] = (0.6, 1.0)
  jitter: Tuple[float, float] = (0.0, 1.5)
  max_object: Tuple[int, int] = (152, 152)

  def validate(self, probe_shape):
    """Raises UserError for a kind it does not know or an empty range."""
    for name, kinds, known in (("probes", self.probes, PROBES),
                               ("layouts", self.layouts, LAYOUTS)):
      unknown = [k for k in kinds if k not in known]
      if not kinds or unknown:
        raise UserError(f"--family_{name}={','.join(kinds)}: expected some "
                        f"of {','.join(known)}")
    h, w = probe_shape
    if self.max_object[0] < 2 * h or self.max_object[1] < 2 * w:
      raise UserError(f"a family's object {self.max_object[0]}x"
                      f"{self.max_object[1]} must be at least twice the "
                      f"probe ({h}x{w}) in each direction")
    return self


@dataclasses.dataclass(frozen=True)
class Scan:
  """One drawn scan geometry.

  Attributes:
    probe: complex64 [h, w].
    positions: float32 [N, 2] (y, x), the smallest at 0 before jitter.
    layout: int32 [N, 4]; object_shape: (H, W), from the positions.
    description: a short text (kinds and sizes), for logs and benchmarks.
  """
  probe: np.ndarray
  positions: np.ndarray
  layout: np.ndarray
  object_shape: Tuple[int, int]
  description: str


def _uniform(rng, bounds):
  return float(rng.uniform(*bounds))


def measured_like(rng, shape, diameter):
  """A zone plate probe whose amplitude carries a smooth random modulation
  (+-25%, a few cycles across the window), as refined probes do."""
  probe = probe_lib.make_probe(shape, "zone_plate", diameter)
  h, w = shape
  noise = rng.normal(size=shape) + 1j * rng.normal(size=shape)
  fy = np.fft.fftfreq(h)[:, None]
  fx = np.fft.fftfreq(w)[None, :]
  smooth = np.real(np.fft.ifft2(np.fft.fft2(noise) *
                                (np.hypot(fy, fx) < 4.0 / min(h, w))))
  smooth /= np.abs(smooth).max() + 1e-12
  return (probe * (1.0 + 0.25 * smooth)).astype(np.complex64)


def draw_probe(rng, shape, config):
  """(probe complex64 [h, w], description) of one draw."""
  kind = config.probes[rng.integers(len(config.probes))]
  diameter = _uniform(rng, config.diameter)
  strength = 2.0 if kind == "measured_like" else 1.0
  defocus = _uniform(rng, config.defocus)
  astigmatism = strength * np.array([_uniform(rng, config.aberration)
                                     for _ in range(2)])
  coma = strength * np.array([_uniform(rng, config.aberration)
                              for _ in range(2)])
  if kind == "measured_like":
    probe = measured_like(rng, shape, diameter)
  else:
    probe = probe_lib.make_probe(shape, kind, diameter)
  probe = probe_lib.aberrate(probe, defocus, astigmatism, coma)
  return probe, f"{kind} {diameter:.2f}, defocus {defocus:+.2f}"


def draw_positions(rng, config, probe_shape, diameter_px):
  """(positions float64 [N, 2], description): a layout kind, spacing and
  extent drawn, the positions jittered."""
  h, w = probe_shape
  kind = config.layouts[rng.integers(len(config.layouts))]
  spacing = _uniform(rng, config.spacing) * diameter_px
  jitter = _uniform(rng, config.jitter)
  # The positions' span, so that the windows stay inside max_object.
  room = min(config.max_object[0] - h, config.max_object[1] - w) - 2 * jitter
  span = max(_uniform(rng, config.extent) * room, 2 * spacing)
  if kind == "fermat":
    # Fermat's nearest-neighbour distance is about 1.8 steps; its radius
    # step * sqrt(N) is span / 2.
    step = spacing / 1.8
    count = max(MIN_POSITIONS, int((span / 2 / step) ** 2))
    positions = layouts.fermat_spiral(count, step)
  elif kind == "mesh":
    side = max(3, int(span // spacing) + 1)
    positions = layouts.mesh(side, side, spacing)
  else:
    rings = max(2, int(span / 2 // spacing))
    positions = layouts.concentric_circles(rings, spacing)
  positions = positions - positions.min(axis=0)
  positions = positions + rng.uniform(-jitter, jitter, positions.shape)
  positions -= positions.min(axis=0)
  return positions, (f"{kind} {len(positions)} x {spacing:.1f} px, jitter "
                     f"{jitter:.1f}")


def draw_scan(rng, probe_shape, config):
  """One scan geometry of the family (`Scan`)."""
  probe, probe_text = draw_probe(rng, probe_shape, config)
  # The probe's diameter in pixels: twice its RMS radius.
  positions, layout_text = draw_positions(
      rng, config, probe_shape, 2 * probe_lib.rms_frame(probe)[2])
  # Stored in float32: the layout comes from the stored values.
  positions = positions.astype(np.float32)
  layout, object_shape = layouts.layout_from_positions(positions, probe_shape)
  # The jitter may round a window one pixel past max_object: clip the scan.
  if (object_shape[0] > config.max_object[0] or
      object_shape[1] > config.max_object[1]):
    keep = ((layout[:, 1] <= config.max_object[0]) &
            (layout[:, 3] <= config.max_object[1]))
    positions = positions[keep]
    layout, object_shape = layouts.layout_from_positions(positions,
                                                         probe_shape)
  return Scan(probe=probe, positions=positions,
              layout=layout, object_shape=object_shape,
              description=f"{probe_text}; {layout_text}")
