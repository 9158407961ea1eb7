"""Loading a PtychoNet SavedModel (TF Serving layout) for reconstruction.

`resolve_saved_model` finds the version directory; `PtychoNetModel` loads it
with plain TensorFlow, checks its signature against a scan's geometry and
reconstructs one scan per call. Used by the reconstruct and evaluate entry
points.
"""
import os
import re

import numpy as np

from ptychonet_tf.utils.errors import UserError


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


class PtychoNetModel:
  """A loaded PtychoNet SavedModel checked against a scan's geometry.

  The contract: signature `serving_default` takes `amplitudes` float32
  [batch, N, h, w] (detector convention) and returns `amplitude` and `phase`
  float32 [batch, H, W]; the object is amplitude * exp(i phase). When the
  model also has a `geometry` signature, its layout must equal the scan's.

  Args:
    path: see `resolve_saved_model`.
    scan: the scanfile.Scan to reconstruct.
  """

  def __init__(self, path, scan):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self.path = resolve_saved_model(path)
    try:
      loaded = tf.saved_model.load(self.path)
    except (OSError, ValueError, RuntimeError, tf.errors.OpError) as e:
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
    if len(dims) != 4 or not _dims_match(dims[1:], [count, h, w]):
      raise UserError(f"SavedModel {self.path} takes amplitudes {dims}; the "
                      f"scan has [batch, {count}, {h}, {w}] (N positions, "
                      f"h x w patterns)")
    outputs = self.fn.structured_outputs
    for key in ("amplitude", "phase"):
      if key not in outputs:
        raise UserError(f"SavedModel {self.path} returns {sorted(outputs)}; "
                        f"expected 'amplitude' and 'phase'")
      out_dims = _spec_dims(outputs[key])
      if len(out_dims) != 3 or not _dims_match(out_dims[1:], [big_h, big_w]):
        raise UserError(f"SavedModel {self.path} returns {key} {out_dims}; "
                        f"the scan's object is [batch, {big_h}, {big_w}]")
    if "geometry" in loaded.signatures:
      layout = loaded.signatures["geometry"]().get("layout")
      if layout is not None and not np.array_equal(layout.numpy(),
                                                   scan.layout):
        raise UserError(f"SavedModel {self.path} was trained on a different "
                        f"scan layout than the scan's (same N={count}, other "
                        f"positions)")

  def __call__(self, amplitudes):
    """float32 [N, h, w] -> complex64 [H, W]."""
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
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
