"""Loading a PtychoNet SavedModel (TF Serving layout) for reconstruction.

`resolve_saved_model` finds the version directory; `PtychoNetModel` loads it
with plain TensorFlow, checks its signature against a scan's geometry and
reconstructs one scan per call. Used by the reconstruct and evaluate entry
points.
"""
import os
import re
import sys

import numpy as np

from ptychonet_tf.utils.errors import UserError

# The same simulated probe gives the same bytes; anything above this is another
# probe (a 0.5 vs 0.6 diameter 64x64 zone plate differs by 1.47).
PROBE_TOLERANCE = 1e-3


# What tf.saved_model.load raises for a damaged export (truncated
# saved_model.pb: protobuf's DecodeError; truncated variables: OpError).
try:
  from google.protobuf.message import DecodeError as _DecodeError  # pylint: disable=g-import-not-at-top
except ImportError:  # pragma: no cover
  _DecodeError = ValueError
LOAD_ERRORS = (OSError, ValueError, RuntimeError, KeyError, TypeError,
               IndexError, _DecodeError)


def resolve_saved_model(path):
  """The version dir of a SavedModel in TF Serving layout.

  Args:
    path: `<export_dir>/<version>` (holds saved_model.pb) or `<export_dir>`
      (the highest numeric version under it is used).

  Raises:
    UserError: no such directory or no SavedModel in it.
  """
  if not path:
    raise UserError("no SavedModel given (an export dir or one of its "
                    "version dirs)")
  if not os.path.isdir(path):
    raise UserError(f"SavedModel {path} is not a directory")
  if os.path.isfile(os.path.join(path, "saved_model.pb")):
    return path
  versions = [int(name) for name in os.listdir(path)
              if re.fullmatch(r"\d+", name) and os.path.isfile(
                  os.path.join(path, name, "saved_model.pb"))]
  if not versions:
    raise UserError(f"SavedModel {path} holds no saved_model.pb and no "
                    f"numeric version dir with one (TF Serving layout "
                    f"<export_dir>/<version>/saved_model.pb)")
  return os.path.join(path, str(max(versions)))


def _spec_dims(spec):
  return [None if d is None else int(d) for d in spec.shape.as_list()]


def _dims_match(dims, expected):
  """Static dims against expected ones; an unknown (None) dim matches any."""
  return all(d is None or d == e for d, e in zip(dims, expected))


def probe_difference(probe, reference):
  """||probe - reference|| / ||reference|| (inf for other shapes)."""
  probe = np.asarray(probe, np.complex128)
  reference = np.asarray(reference, np.complex128)
  if probe.shape != reference.shape:
    return float("inf")
  scale = max(float(np.linalg.norm(reference)), 1e-30)
  return float(np.linalg.norm(probe - reference)) / scale


def refine_probe_inputs(signature, path, passes=None):
  """The inputs of an `any_scan_refine_probe` signature besides the scan's.

  Args:
    signature: the loaded signature.
    path: its SavedModel (for the error).
    passes: the passes to ask for; None: `network.PROBE_PASSES`.

  Returns:
    {"passes": int32 scalar} where the signature takes a count; {} for an
    export of an earlier version, whose graph runs a fixed count.

  Raises:
    UserError: `passes` given to such an earlier export.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if "passes" not in signature.structured_input_signature[1]:
    if passes is not None:
      raise UserError(f"SavedModel {path}: its any_scan_refine_probe runs a "
                      f"fixed number of passes; export it again with this "
                      f"version for --passes")
    return {}
  if passes is None:
    from ptychonet_tf.model import network  # pylint: disable=g-import-not-at-top
    passes = network.PROBE_PASSES
  return {"passes": tf.constant(int(passes), tf.int32)}


class PtychoNetModel:
  """A loaded PtychoNet SavedModel checked against a scan's geometry.

  The contract: signature `serving_default` takes `amplitudes` float32
  [batch, N, h, w] (detector convention) and returns `amplitude` and `phase`
  float32 [batch, H, W]; the object is amplitude * exp(i phase). When the
  model also has a `geometry` signature (every export of this package has),
  a scan of its layout runs through `serving_default`; a scan of other
  positions (any count, any object size) through the `any_scan` signature
  (`PtychoNet.reconstruct_scan`: positions and probe as inputs; exports
  before it had none and refuse such scans). Its probe must be the scan's
  probe: a network trained with one probe says nothing reliable about
  patterns made with another, so a relative difference ||P_scan - P_model||
  / ||P_model|| above `probe_tolerance` is refused, or only warned about
  (one line on stderr) with `allow_other_probe` (and then `any_scan`
  runs, with the scan's probe in its physics). With `refine_probe` every
  scan goes through `any_scan_refine_probe`, and `probe` holds the last
  scan's refined probe. `passes` is the number of passes of the refinement
  steps: with more than one (without refine_probe) every scan goes through
  `any_scan_passes`.

  Args:
    path: see `resolve_saved_model`.
    scan: the scanfile.Scan to reconstruct (amplitudes, layout, object_shape,
      probe).
    probe_tolerance: the largest relative probe difference accepted.
    allow_other_probe: warn instead of refusing a probe that differs.
    refine_probe: refine the probe (any_scan_refine_probe).
    passes: passes of the refinement steps (>= 1); None: 1, or
      `network.PROBE_PASSES` with refine_probe.
  """

  def __init__(self, path, scan, probe_tolerance=PROBE_TOLERANCE,
               allow_other_probe=False, refine_probe=False, passes=None):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if passes is not None and int(passes) < 1:
      raise UserError(f"--passes={passes} must be >= 1")
    self.path = resolve_saved_model(path)
    try:
      loaded = tf.saved_model.load(self.path)
    except LOAD_ERRORS + (tf.errors.OpError,) as e:
      raise UserError(f"SavedModel {self.path} cannot be loaded "
                      f"({str(e).splitlines()[0] if str(e) else type(e).__name__})")
    self._loaded = loaded  # keeps the variables alive
    self.object_shape = tuple(scan.object_shape)
    if "serving_default" not in loaded.signatures:
      raise UserError(f"SavedModel {self.path} has no serving_default "
                      f"signature (has {sorted(loaded.signatures)})")
    self.fn = loaded.signatures["serving_default"]
    inputs = self.fn.structured_input_signature[1]
    if set(inputs) != {"amplitudes"}:
      raise UserError(f"SavedModel {self.path}: serving_default takes "
                      f"{sorted(inputs)}; expected one input 'amplitudes'")
    count, h, w = scan.amplitudes.shape
    big_h, big_w = scan.object_shape
    dims = _spec_dims(inputs["amplitudes"])
    if len(dims) != 4 or not _dims_match(dims[2:], [h, w]):
      raise UserError(f"SavedModel {self.path} takes amplitudes {dims}; the "
                      f"scan has [batch, {count}, {h}, {w}] (N positions, "
                      f"h x w patterns)")
    self.any_scan = None
    self.scan = scan
    geometry = (loaded.signatures["geometry"]()
                if "geometry" in loaded.signatures else {})
    layout = geometry.get("layout")
    same_layout = (layout is not None and
                   np.array_equal(layout.numpy(), scan.layout) and
                   "object_shape" in geometry and
                   tuple(geometry["object_shape"].numpy()) == (big_h, big_w))
    if layout is not None and not same_layout:
      if "any_scan" not in loaded.signatures:
        raise UserError(f"SavedModel {self.path} was trained on a different "
                        f"scan layout than the scan's and has no any_scan "
                        f"signature (export it again with this version)")
      self.any_scan = loaded.signatures["any_scan"]
    elif dims[1] is not None and dims[1] != count:
      raise UserError(f"SavedModel {self.path} takes amplitudes {dims}; the "
                      f"scan has [batch, {count}, {h}, {w}] (N positions, "
                      f"h x w patterns)")
    outputs = self.fn.structured_outputs
    for key in ("amplitude", "phase"):
      if key not in outputs:
        raise UserError(f"SavedModel {self.path} returns {sorted(outputs)}; "
                        f"expected 'amplitude' and 'phase'")
      out_dims = _spec_dims(outputs[key])
      if self.any_scan is None and (
          len(out_dims) != 3 or not _dims_match(out_dims[1:], [big_h, big_w])):
        raise UserError(f"SavedModel {self.path} returns {key} {out_dims}; "
                        f"the scan's object is [batch, {big_h}, {big_w}]")
    if geometry:
      if "probe_real" in geometry and "probe_imag" in geometry:
        probe = (geometry["probe_real"].numpy().astype(np.float64) +
                 1j * geometry["probe_imag"].numpy().astype(np.float64))
        self.probe_difference = probe_difference(scan.probe, probe)
        if self.probe_difference > probe_tolerance:
          message = (f"SavedModel {self.path} was trained with another probe "
                     f"than the scan's (relative difference "
                     f"{self.probe_difference:.3g} > {probe_tolerance:g})")
          if not (allow_other_probe or refine_probe):
            raise UserError(f"{message}; pass --allow_other_probe to use it "
                            f"anyway, or --refine_probe to refine the probe")
          print(f"warning: {message}; its output may be wrong",
                file=sys.stderr)
          if "any_scan" in loaded.signatures:
            self.any_scan = loaded.signatures["any_scan"]
    self.refine_probe = bool(refine_probe)
    # The probe of the last scan: the scan's, or the refined one.
    self.probe = np.asarray(scan.probe, np.complex64)
    if self.refine_probe:
      if "any_scan_refine_probe" not in loaded.signatures:
        raise UserError(f"SavedModel {self.path} has no "
                        f"any_scan_refine_probe signature to refine the "
                        f"probe with (export it again with this version)")
      self.any_scan = loaded.signatures["any_scan_refine_probe"]
    # The any_scan signature's inputs besides the scan's.
    self._scan_inputs = {}
    if self.refine_probe:
      self._scan_inputs = refine_probe_inputs(self.any_scan, self.path,
                                              passes)
    elif passes not in (None, 1):
      if "any_scan_passes" not in loaded.signatures:
        raise UserError(f"SavedModel {self.path} has no any_scan_passes "
                        f"signature to run --passes={passes} with (export it "
                        f"again with this version)")
      self.any_scan = loaded.signatures["any_scan_passes"]
      self._scan_inputs = {"passes": tf.constant(int(passes), tf.int32)}

  def _call_any_scan(self, amplitudes):
    """(amplitude, phase) float64 [H, W] of the scan through any_scan, the
    answer (the scanned rectangle) placed in the scan's object."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    corners = self.scan.layout[:, [0, 2]].astype(np.float32)
    probe = np.asarray(self.scan.probe, np.complex64)
    try:
      out = self.any_scan(
          amplitudes=tf.constant(amplitudes[None], tf.float32),
          positions=tf.constant(corners[None]),
          probe=tf.constant(np.stack([probe.real, probe.imag], -1)),
          **self._scan_inputs)
    except tf.errors.InvalidArgumentError as e:
      # A graph's assertion names itself after "assertion failed: [...]".
      found = re.search(r"assertion failed: \[([^\]]*)\]", e.message)
      reason = found.group(1) if found else e.message.strip().splitlines()[0]
      raise UserError(f"SavedModel {self.path} refused the scan "
                      f"({reason})") from None
    if self.refine_probe:
      planes = out["probe"].numpy()
      self.probe = (planes[..., 0] + 1j * planes[..., 1]).astype(np.complex64)
    top, left = (int(v) for v in corners.min(axis=0))
    placed = []
    for key in ("amplitude", "phase"):
      part = out[key].numpy()[0].astype(np.float64)
      canvas = np.zeros(self.object_shape)
      canvas[top:top + part.shape[0], left:left + part.shape[1]] = part
      placed.append(canvas)
    return placed

  def __call__(self, amplitudes):
    """float32 [N, h, w] -> complex64 [H, W]."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    if self.any_scan is not None:
      amplitude, phase = self._call_any_scan(amplitudes)
    else:
      out = self.fn(amplitudes=tf.constant(amplitudes[None], tf.float32))
      amplitude = out["amplitude"].numpy()[0].astype(np.float64)
      phase = out["phase"].numpy()[0].astype(np.float64)
    for name, image in (("amplitude", amplitude), ("phase", phase)):
      if image.shape != self.object_shape:
        raise UserError(f"SavedModel {self.path} returned {name} of shape "
                        f"{image.shape}; the scan's object is "
                        f"{self.object_shape}")
    obj = amplitude * np.exp(1j * phase)
    if not np.all(np.isfinite(obj)):
      raise UserError(f"SavedModel {self.path} returned NaN or infinite values")
    return obj.astype(np.complex64)
