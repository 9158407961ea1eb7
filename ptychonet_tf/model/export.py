"""SavedModel export in TF Serving's layout, loadable with plain TensorFlow.

`export_saved_model` writes `<export_dir>/<version>/` (saved_model.pb,
variables/) with these signatures:

  serving_default: amplitudes float32 [batch, N, h, w]
                   -> amplitude, phase float32 [batch, H, W]
  any_scan:        amplitudes float32 [1, N', h, w], positions float32
                   [1, N', 2] (y, x pixels, fractional allowed), probe
                   float32 [h, w, 2] (real, imaginary)
                   -> amplitude, phase float32 [1, H', W']
  any_scan_passes: any_scan's inputs and passes int32 [] (>= 1): the
                   refinement steps run that many passes, each from the
                   last one's object -> amplitude, phase [1, H', W']
  any_scan_refine_probe: any_scan_passes' inputs; the refinement steps also
                   refine the probe, in `passes` passes (`network.PROBE_PASSES`
                   is the package's default) -> amplitude, phase [1, H', W'],
                   probe float32 [h, w, 2]
  geometry:        () -> probe_real, probe_imag float32 [h, w],
                   layout int32 [N, 4], object_shape int32 [2]

serving_default serves the training geometry: its probe scale and layout
are baked into the graph as constants. any_scan serves a scan of any
positions, count and probe of the model's pattern size, one scan per call
(`PtychoNet.reconstruct_scan`: windows, stitching weights and the
refinement's physics from the inputs; the object returned just covers the
positions, the smallest at (0, 0)). Both use only core TF ops (no custom
ops), so
`tf.saved_model.load` in a process that never imports this package and
`saved_model_cli run` can execute it. The paper's network (no refinement
steps) never needs XLA. A model with refinement steps runs them as one
XLA-compiled function (faster on CPU: the window gather and scatter fuse),
and, since it needs XLA anyway, its stitching as another (on CPU an XLA
scatter is many times faster than the plain one, `layers.StitchPatches`);
plain TensorFlow and `saved_model_cli` run them as is and TF Serving with
`--xla_cpu_compilation_enabled=true`. `xla=False`
exports both as ordinary ops instead. The exported network always computes
in float32, whatever precision it was trained in (`float32_copy` rebuilds it
with compute_policy "float32"; the global Keras policy is not used).

A version is written to a hidden temp folder `.tmp-<version>-<host>-<pid>`
(TF Serving loads only numeric folders, so it never sees one) and renamed
into place. An export killed midway leaves its temp folder behind; the next
export into the same base directory removes those of processes of this host
that are no longer running (`remove_stale_temps`).
"""
import os
import re
import shutil
import socket

import numpy as np
import tensorflow as tf

from ptychonet_tf.model import inference
from ptychonet_tf.model import network
from ptychonet_tf.utils import files
from ptychonet_tf.utils.errors import UserError


class ServingModule(tf.Module):
  """What the SavedModel tracks of a float32 PtychoNet: its variables alone.

  The signatures (`serving_functions`) are given to `tf.saved_model.save`
  as concrete functions. Tracking the Keras model or tf.functions as
  attributes would also save their object graph and functions, which
  retraces every function at save time and restores them all at load, for
  nothing (clients call the signatures): the small_dense model's export took
  2.2 times as long, its load and first call 2.1 times, its SavedModel 1.7
  times the size (benchmarks/bench_export.py, a 2-core AVX2 CPU).
  """

  def __init__(self, model):
    super().__init__(name="ptychonet_serving")
    # The tf.Variables themselves (not only Keras' wrappers), so that the
    # SavedModel's TF1 restore path (saved_model_cli, TF Serving) finds them;
    # `read_weights` reads them back in this order.
    self._variables = [getattr(v, "value", v) for v in model.variables]


def serving_functions(model, probe):
  """{signature name: tf.function with its input signature} of a float32
  PtychoNet `model` trained with `probe` (the module doc's signatures)."""
  n, (h, w) = model.num_positions, model.probe_shape
  probe = np.asarray(probe, np.complex64)
  probe_real = tf.constant(probe.real, tf.float32)
  probe_imag = tf.constant(probe.imag, tf.float32)
  layout = tf.constant(model.layout, tf.int32)
  object_shape = tf.constant(model.object_shape, tf.int32)

  @tf.function(input_signature=[
      tf.TensorSpec([None, n, h, w], tf.float32, name="amplitudes")],
               jit_compile=False)
  def serve(amplitudes):
    out = model(amplitudes, training=False)
    return {"amplitude": tf.identity(out["amplitude"], name="amplitude"),
            "phase": tf.identity(out["phase"], name="phase")}

  scan_signature = [
      tf.TensorSpec([1, None, h, w], tf.float32, name="amplitudes"),
      tf.TensorSpec([1, None, 2], tf.float32, name="positions"),
      tf.TensorSpec([h, w, 2], tf.float32, name="probe")]

  def scan_outputs(amplitudes, positions, probe, refine_probe, passes=None):
    """reconstruct_scan's outputs with the probe as real planes."""
    out = model.reconstruct_scan(
        amplitudes, positions, tf.complex(probe[..., 0], probe[..., 1]),
        refine_probe=refine_probe, passes=passes)
    if refine_probe:
      out["probe"] = tf.stack([tf.math.real(out["probe"]),
                               tf.math.imag(out["probe"])], -1)
    return {k: tf.identity(v, name=k) for k, v in out.items()}

  @tf.function(input_signature=scan_signature, jit_compile=False)
  def any_scan(amplitudes, positions, probe):
    return scan_outputs(amplitudes, positions, probe, False)

  passes_signature = scan_signature + [
      tf.TensorSpec([], tf.int32, name="passes")]

  @tf.function(input_signature=passes_signature, jit_compile=False)
  def any_scan_passes(amplitudes, positions, probe, passes):
    return scan_outputs(amplitudes, positions, probe, False, passes)

  @tf.function(input_signature=passes_signature, jit_compile=False)
  def any_scan_refine_probe(amplitudes, positions, probe, passes):
    return scan_outputs(amplitudes, positions, probe, True, passes)

  @tf.function(input_signature=[])
  def geometry():
    return {"probe_real": probe_real, "probe_imag": probe_imag,
            "layout": layout, "object_shape": object_shape}

  return {"serving_default": serve, "any_scan": any_scan,
          "any_scan_passes": any_scan_passes,
          "any_scan_refine_probe": any_scan_refine_probe,
          "geometry": geometry}


def float32_copy(model, refine_steps=None, xla=True):
  """A float32 copy of a PtychoNet, with its weights, stitching without XLA.

  Args:
    model: a built PtychoNet of any compute policy.
    refine_steps: None keeps all of the model's refinement steps; K' <= K
      keeps only the first K' (0: the stitched network alone, the paper's
      PtychoNet), with their learned parameters.
    xla: run the refinement steps XLA-compiled, and then the stitching too
      (without refinement steps the stitching is never compiled: the
      paper's network exports without XLA).

  Returns:
    A built PtychoNet with compute_policy "float32" (every layer computes in
    float32) and the same float32 weights; the global Keras dtype policy is
    not touched.
  """
  if refine_steps is None:
    refine_steps = model.refine_steps
  if not 0 <= refine_steps <= model.refine_steps:
    raise UserError(f"cannot keep {refine_steps} refinement steps of a model "
                    f"that has {model.refine_steps}")
  config = dict(model.get_config(), compute_policy="float32",
                refine_steps=refine_steps)
  copy = network.PtychoNet.from_config(config)
  # Only a model that needs XLA for its refinement steps compiles its stitch.
  copy.stitch.jit_compile = bool(xla) and refine_steps > 0
  if copy.refinement is not None:
    copy.refinement.jit_compile = bool(xla)
  n, (h, w) = model.num_positions, model.probe_shape
  copy(np.zeros([1, n, h, w], np.float32))
  copy.patch_network.set_weights(model.patch_network.get_weights())
  if refine_steps:
    source, target = model.refinement, copy.refinement
    target.momentum.assign(source.momentum[:refine_steps])
    target.step_size.assign(source.step_size[:refine_steps])
    if source.smoothing_delta is not None:
      target.smoothing_delta.assign(source.smoothing_delta)
    for mine, theirs in zip(target.corrections, source.corrections):
      mine.set_weights(theirs.get_weights())
    # The prior steps' learned noise levels (those of the steps kept) and
    # the denoisers' weights (trained with --refine_prior_train).
    if target.prior_log_sigma is not None:
      target.prior_log_sigma.assign(
          source.prior_log_sigma[:target.prior_steps])
    for mine, theirs in zip(target.denoisers, source.denoisers):
      mine.set_weights(theirs.get_weights())
  return copy


_TEMP = re.compile(r"^\.tmp-(\d+)-(?:(.+)-)?(\d+)$")
_OLD = re.compile(r"^(\d+)\.old-(\d+)$")  # files.replace_dir's aside name


def _host():
  return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def _running(pid):
  """Whether process `pid` of this host is running."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except (PermissionError, OverflowError):
    return True  # someone else's process, or not a pid at all: keep
  return True


def temp_name(version):
  """The hidden folder an export of `version` by this process writes first."""
  return f".tmp-{int(version)}-{_host()}-{os.getpid()}"


def remove_stale_temps(export_dir):
  """Removes what killed exports of this host left in `export_dir`.

  - `.tmp-<version>-<host>-<pid>/` (and the older `.tmp-<version>-<pid>/`)
    whose process has ended: deleted (an unfinished SavedModel);
  - `<version>.old-<pid>/` (a version that `files.replace_dir` had renamed
    aside when its process died): deleted when `<version>/` exists, else
    renamed back to `<version>/`.
  Folders of running processes, of this one and of other hosts are kept.

  Returns:
    The names removed or restored.
  """
  if not os.path.isdir(export_dir):
    return []
  host, done = _host(), []
  for name in sorted(os.listdir(export_dir)):
    path = os.path.join(export_dir, name)
    temp, old = _TEMP.match(name), _OLD.match(name)
    if temp and os.path.isdir(path):
      pid = int(temp.group(3))
      if (temp.group(2) in (None, host) and pid != os.getpid()
          and not _running(pid)):
        shutil.rmtree(path, ignore_errors=True)
        done.append(name)
    elif old and os.path.isdir(path):
      pid = int(old.group(2))
      if pid != os.getpid() and not _running(pid):
        final = os.path.join(export_dir, old.group(1))
        if os.path.exists(final):
          shutil.rmtree(path, ignore_errors=True)
        else:
          os.replace(path, final)
        done.append(name)
  return done


def export_saved_model(model, probe, export_dir, version, refine_steps=None,
                       xla=True):
  """Writes the SavedModel of `model` to <export_dir>/<version>/ atomically.

  Args:
    model: a built PtychoNet (any dtype policy).
    probe: complex [h, w] the training probe (stored in the geometry signature).
    export_dir: base directory (created if needed).
    version: positive int, the TF Serving model version (e.g. the step).
    refine_steps: None exports every refinement step; K' keeps the first K'
      (see `float32_copy`).
    xla: run the refinement steps XLA-compiled (see the module doc).

  Returns:
    The version directory.
  """
  model = float32_copy(model, refine_steps, xla)
  module = ServingModule(model)
  try:
    os.makedirs(export_dir, exist_ok=True)
  except OSError as e:
    raise files.write_error(e, export_dir) from None
  remove_stale_temps(export_dir)
  final = os.path.join(export_dir, str(int(version)))
  tmp = os.path.join(export_dir, temp_name(version))
  shutil.rmtree(tmp, ignore_errors=True)
  try:
    signatures = {name: fn.get_concrete_function()
                  for name, fn in serving_functions(model, probe).items()}
    tf.saved_model.save(module, tmp, signatures=signatures)
  except BaseException as e:
    shutil.rmtree(tmp, ignore_errors=True)
    # A full or read-only disk: one line naming the folder and the cause.
    error = files.write_error(e, final)
    if error is not None:
      raise error from None
    raise
  return files.replace_dir(tmp, final)


def is_saved_model(path):
  """Whether `path` is a SavedModel version dir or an export dir with one."""
  try:
    inference.resolve_saved_model(path)
  except UserError:
    return False
  return True


def read_weights(path):
  """The network weights an export of this package holds.

  Args:
    path: an export dir (its highest version) or one version dir.

  Returns:
    (version dir, probe shape [h, w], list of numpy arrays in the order of
    the exported network's `variables`, which is the order of any PtychoNet
    built with the same network flags).

  Raises:
    UserError: not a SavedModel of this package (no geometry signature or
      no recorded variables).
  """
  path = inference.resolve_saved_model(path)
  try:
    loaded = tf.saved_model.load(path)
    geometry = loaded.signatures["geometry"]()
    variables = list(loaded._variables)  # pylint: disable=protected-access
  except inference.LOAD_ERRORS + (AttributeError, tf.errors.OpError) as e:
    raise UserError(f"SavedModel {path} is not a PtychoNet export of this "
                    f"package (no geometry signature or weights: "
                    f"{type(e).__name__})") from e
  probe_shape = [int(s) for s in geometry["probe_real"].shape]
  return path, probe_shape, [v.numpy() for v in variables]
