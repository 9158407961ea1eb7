"""The any_scan signatures of an export: scans of other positions, counts and
probes, in a fresh process with plain TensorFlow, through reconstruct, and
with the probe refined."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import run_cli, run_fresh_script
from ptychonet_tf.cli import siemens_star
from ptychonet_tf.data import scanfile
from ptychonet_tf.evaluation import metrics
from ptychonet_tf.model import export as export_lib
from ptychonet_tf.model import inference
from ptychonet_tf.model import network
from ptychonet_tf.model import refinement
from ptychonet_tf.model.network import NetworkConfig
from ptychonet_tf.physics import forward
from ptychonet_tf.physics import geometry as geometry_lib
from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import probe as probe_lib
from ptychonet_tf.physics import windows as windows_lib
from ptychonet_tf.utils.errors import UserError


ANY_SCAN = r"""
import sys
import numpy as np
import tensorflow as tf
path, out_path = sys.argv[1:3]
fn = tf.saved_model.load(path).signatures["any_scan"]
answers = {}
for name in sys.argv[3:]:
  scan = np.load(name)
  probe = scan["probe"]
  out = fn(amplitudes=tf.constant(scan["amplitudes"][None]),
           positions=tf.constant(scan["layout"][None, :, [0, 2]], tf.float32),
           probe=tf.constant(np.stack([probe.real, probe.imag], -1)))
  answers.update({name + ":" + k: v.numpy() for k, v in out.items()})
assert not [m for m in sys.modules if m.startswith("ptychonet")]
np.savez(out_path, **answers)
"""


def refining_model():
  """An untrained tiny model with 3 refinement steps in 2 position groups
  and a probe-weighted stitch, on the 3x3 mesh of `tiny_model`.

  Its weights are seeded: from an untrained network's patches the steps
  amplify float rounding (2e-7 after the stitch) to 1e-4 - 3e-4 depending
  on the draw, so an unseeded draw (whatever ran before in the process)
  made the XLA-against-plain comparison below flaky."""
  keras.utils.set_random_seed(0)
  probe = probe_lib.make_probe((16, 16), "zone_plate", 0.5)
  layout, shape = layouts.layout_from_positions(layouts.mesh(3, 3, 5), (16, 16))
  geometry = geometry_lib.Geometry(probe=probe, layout=layout,
                                   object_shape=shape)
  model = network.build_model(
      NetworkConfig(base_channels=4, depth=2, refine_steps=3, refine_groups=2),
      geometry)
  model(np.zeros((1, 9, 16, 16), np.float32))
  return model, probe


def as_object(out):
  """amplitude * exp(i phase) of a signature's answer."""
  return np.asarray(out["amplitude"]) * np.exp(1j * np.asarray(out["phase"]))


def simulated(layout, object_shape, probe, seed):
  """float32 [N, h, w] amplitudes of a random object in [0.5, 1] x
  exp(i [-1, 0])."""
  rng = np.random.default_rng(seed)
  obj = rng.uniform(0.5, 1, object_shape) * np.exp(
      -1j * rng.uniform(0, 1, object_shape))
  return forward.diffraction_amplitudes(
      tf.constant(obj[None], tf.complex64), probe, layout).numpy()[0]


def other_scan(path, seed, positions, diameter):
  """A scan file of another layout and probe than `refining_model`'s, with
  2 unscanned pixels on every side of its windows."""
  probe = probe_lib.make_probe((16, 16), "pinhole", diameter)
  layout, shape = layouts.layout_from_positions(positions, (16, 16), margin=2)
  amplitudes = simulated(layout, shape, probe, seed)
  scan = scanfile.Scan(amplitudes=amplitudes, layout=layout, probe=probe,
                       object_shape=shape)
  scan.save(path)
  return scan


@pytest.mark.slow
def test_passes_continue_from_the_last_object_and_probe():
  """reconstruct_scan(refine_probe=True, passes=P) is the refinement run P
  times in a row, each pass from the object and probe the last one
  returned; from a defocused probe the fit keeps improving with the
  passes. Without refine_probe the passes refine the object alone, the
  given probe throughout."""
  model, probe = refining_model()
  layout, shape = model.layout, model.object_shape
  y, x = np.mgrid[:16, :16] - 7.5
  wrong = (probe * np.exp(0.5j * (x ** 2 + y ** 2) / 30.0)).astype(np.complex64)
  amplitudes = tf.constant(simulated(layout, shape, probe, 1)[None])
  positions = tf.constant(layout[None, :, [0, 2]], tf.float32)

  def run(passes, refine_probe=True, given=wrong):
    return model.reconstruct_scan(amplitudes, positions, given,
                                  refine_probe=refine_probe, passes=passes)

  def error(out):
    return metrics.fourier_error(as_object(out)[0], out["probe"].numpy(),
                                 layout, amplitudes[0])

  by_hand = run(1)
  errors = [error(by_hand)]
  corners, object_shape = windows_lib.scan_frame(positions[0], (16, 16))
  for _ in range(3):
    physics = refinement.ScanPhysics.of_scan(
        corners, object_shape, by_hand["probe"], model.refine_groups, True)
    by_hand = model.refine({"amplitude": by_hand["amplitude"],
                            "phase": by_hand["phase"]}, amplitudes, physics)
    errors.append(error(by_hand))
  four = run(4)
  np.testing.assert_allclose(as_object(four), as_object(by_hand), atol=1e-5)
  np.testing.assert_allclose(four["probe"], by_hand["probe"], atol=1e-5)
  assert all(b < a for a, b in zip(errors, errors[1:])), errors
  assert errors[-1] < 0.6 * errors[0], errors
  assert network.PROBE_PASSES > 1  # the signature's default refines longer
  # The object alone, with the true probe: three passes are three calls of
  # the refinement, each from the last object, and fit better than one.
  physics = refinement.ScanPhysics.of_scan(corners, object_shape, probe,
                                           model.refine_groups)
  one = run(1, False, probe)
  assert "probe" not in one and "probe" not in run(2, False, probe)
  by_hand = one
  for _ in range(2):
    by_hand = model.refine(by_hand, amplitudes, physics)
  three = run(3, False, probe)
  np.testing.assert_allclose(as_object(three), as_object(by_hand), atol=1e-5)
  # The count may be a tensor (the any_scan_passes signature's input).
  np.testing.assert_allclose(as_object(run(tf.constant(3), False, probe)),
                             as_object(three), atol=1e-5)

  def misfit(out):
    return metrics.fourier_error(as_object(out)[0], probe, layout,
                                 amplitudes[0])

  assert misfit(three) < 0.7 * misfit(one), (misfit(one), misfit(three))
  with pytest.raises(ValueError, match="passes=0 must be >= 1"):
    run(0, False, probe)


@pytest.mark.slow
def test_any_scan_serves_other_layouts_and_probes(tmp_path):
  """The any_scan signature: on the training geometry it is serving_default;
  on scans of other positions, count and probe it is the model's
  reconstruct_scan, in a fresh process with plain TensorFlow, and what
  reconstruct --method=ptychonet writes (placed in the scan's object)."""
  model, probe = refining_model()
  base = str(tmp_path / "export")
  path = export_lib.export_saved_model(model, probe, base, 1)
  loaded = tf.saved_model.load(path)
  x = simulated(model.layout, model.object_shape, probe, 0)[None]
  planes = np.stack([probe.real, probe.imag], -1).astype(np.float32)
  # Any origin: the positions are shifted to start at 0.
  corners = model.layout[None, :, [0, 2]].astype(np.float32) + 7.0
  same = loaded.signatures["any_scan"](
      amplitudes=tf.constant(x), positions=tf.constant(corners),
      probe=tf.constant(planes))
  fixed = loaded.signatures["serving_default"](amplitudes=tf.constant(x))
  # serving_default runs the refinement XLA-compiled, any_scan as plain ops:
  # the float sums differ (up to 1e-4 after 3 untrained steps; the complex
  # objects are compared: the phase of a nearly dark pixel is ill-posed).
  np.testing.assert_allclose(as_object(same), as_object(fixed), atol=5e-4)
  scans = {str(tmp_path / "mesh.npz"): other_scan(
               str(tmp_path / "mesh.npz"), 1, layouts.mesh(4, 3, 4), 0.6),
           str(tmp_path / "spiral.npz"): other_scan(
               str(tmp_path / "spiral.npz"), 2,
               layouts.fermat_spiral(7, 3.3), 0.45)}
  result = run_fresh_script(
      tmp_path, ANY_SCAN, [path, str(tmp_path / "answers.npz"), *scans])
  assert result.returncode == 0, result.stderr[-3000:]
  answers = np.load(tmp_path / "answers.npz")
  for i, (name, scan) in enumerate(scans.items()):
    eager = model.reconstruct_scan(
        scan.amplitudes[None], scan.layout[None, :, [0, 2]].astype(np.float32),
        scan.probe)
    amplitude = answers[name + ":amplitude"][0]
    # The object just covers the windows: the 2-pixel margins are not there.
    assert amplitude.shape == tuple(s - 4 for s in scan.object_shape)
    answer = as_object({k: answers[f"{name}:{k}"][0]
                        for k in ("amplitude", "phase")})
    np.testing.assert_allclose(answer, as_object(eager)[0], atol=2e-5)
    if i:
      continue  # one reconstruct run: the CLI places any scan the same way
    out = str(tmp_path / f"rec{i}.npz")
    result = run_cli(["-m", "ptychonet_tf.reconstruct", f"--scan={name}",
                      "--method=ptychonet", f"--saved_model={base}",
                      "--allow_other_probe", f"--out={out}"])
    assert result.returncode == 0, result.stderr[-3000:]
    obj = np.load(out)["object"]
    assert obj.shape == tuple(scan.object_shape)
    assert not obj[:2].any() and not obj[:, :2].any()
    assert not obj[-2:].any() and not obj[:, -2:].any()
    np.testing.assert_allclose(obj[2:-2, 2:-2], answer, atol=2e-5)
  # A scan of fewer positions than the refinement's 2 groups: one line.
  single = other_scan(str(tmp_path / "single.npz"), 3, np.zeros((1, 2)), 0.5)
  with pytest.raises(UserError, match="refused the scan .the scan has fewer "
                     "positions than the 2 refinement position groups"):
    inference.PtychoNetModel(base, single, allow_other_probe=True)(
        single.amplitudes)
  # --passes (reconstruct --passes): the any_scan_passes signature, the
  # steps run that many times; one pass is any_scan.
  name, scan = next(iter(scans.items()))
  planes = np.stack([scan.probe.real, scan.probe.imag], -1)
  inputs = dict(amplitudes=tf.constant(scan.amplitudes[None]),
                positions=tf.constant(scan.layout[None, :, [0, 2]],
                                      tf.float32),
                probe=tf.constant(planes))
  passes = loaded.signatures["any_scan_passes"]
  np.testing.assert_allclose(
      as_object(passes(passes=tf.constant(1), **inputs))[0],
      as_object({k: answers[f"{name}:{k}"][0]
                 for k in ("amplitude", "phase")}), atol=2e-5)
  two = as_object(passes(passes=tf.constant(2), **inputs))[0]
  np.testing.assert_allclose(
      two, as_object(model.reconstruct_scan(
          inputs["amplitudes"], inputs["positions"], scan.probe,
          passes=2))[0], atol=2e-5)
  placed = inference.PtychoNetModel(base, scan, allow_other_probe=True,
                                    passes=2)(scan.amplitudes)
  np.testing.assert_allclose(placed[2:-2, 2:-2], two, atol=2e-5)
  # A REST client's 0 is refused by the graph.
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="passes must be >= 1"):
    passes(passes=tf.constant(0), **inputs)
  with pytest.raises(UserError, match="--passes=0 must be >= 1"):
    inference.PtychoNetModel(base, scan, allow_other_probe=True, passes=0)
  # With refine_probe (reconstruct --refine_probe): the
  # any_scan_refine_probe signature's object and refined probe, another
  # probe than the given one; a probe other than the model's is accepted.
  refined = loaded.signatures["any_scan_refine_probe"](
      passes=tf.constant(network.PROBE_PASSES), **inputs)
  refined_probe = refined["probe"].numpy()
  assert refined_probe.shape == (16, 16, 2)
  assert np.abs(refined_probe - planes).max() > 1e-3
  out = str(tmp_path / "refined.npz")
  result = run_cli(["-m", "ptychonet_tf.reconstruct", f"--scan={name}",
                    "--method=ptychonet", f"--saved_model={base}",
                    "--refine_probe", f"--out={out}"])
  assert result.returncode == 0, result.stderr[-3000:]
  assert "trained with another probe" in result.stderr  # warned, not refused
  with np.load(out) as f:
    np.testing.assert_allclose(f["probe"], refined_probe[..., 0] +
                               1j * refined_probe[..., 1], atol=2e-5)
    np.testing.assert_allclose(f["object"][2:-2, 2:-2],
                               as_object(refined)[0], atol=2e-5)
  # tools/siemens_star.py --learned's caller of the same signature.
  _, star_probe, _ = siemens_star.AnyScanModel(base)(scan, refine_probe=True)
  np.testing.assert_allclose(star_probe, refined_probe[..., 0] +
                             1j * refined_probe[..., 1], atol=2e-5)
  # --passes with --refine_probe: the signature's passes input.
  refiner = inference.PtychoNetModel(base, scan, refine_probe=True, passes=3)
  three = refiner(scan.amplitudes)
  eager = model.reconstruct_scan(inputs["amplitudes"], inputs["positions"],
                                 scan.probe, refine_probe=True, passes=3)
  np.testing.assert_allclose(three[2:-2, 2:-2], as_object(eager)[0],
                             atol=2e-5)
  np.testing.assert_allclose(refiner.probe, eager["probe"], atol=2e-5)


def test_exports_without_passes_inputs_refuse_passes_in_one_line(tmp_path):
  """An export of an earlier version (any_scan_refine_probe without a
  `passes` input, no any_scan_passes) still refines the probe with its own
  passes; --passes asks for a new export in one line."""
  n, h, w, big = 4, 8, 8, 12

  class Old(tf.Module):

    @tf.function(input_signature=[tf.TensorSpec([None, n, h, w], tf.float32)])
    def serve(self, amplitudes):
      zeros = tf.zeros([tf.shape(amplitudes)[0], big, big])
      return {"amplitude": zeros + 1.0, "phase": zeros}

    @tf.function(input_signature=[
        tf.TensorSpec([1, None, h, w], tf.float32),
        tf.TensorSpec([1, None, 2], tf.float32),
        tf.TensorSpec([h, w, 2], tf.float32)])
    def refine(self, amplitudes, positions, probe):
      del amplitudes, positions
      return {"amplitude": tf.fill([1, big, big], 2.0),
              "phase": tf.zeros([1, big, big]), "probe": probe * 0.5}

  old = Old()
  path = str(tmp_path / "old" / "1")
  tf.saved_model.save(old, path, signatures={
      "serving_default": old.serve, "any_scan_refine_probe": old.refine})
  layout, shape = layouts.layout_from_positions(layouts.mesh(2, 2, 4), (h, w))
  scan = scanfile.Scan(amplitudes=np.ones((n, h, w), np.float32),
                       layout=layout, object_shape=shape,
                       probe=np.ones((h, w), np.complex64))
  refiner = inference.PtychoNetModel(path, scan, refine_probe=True)
  obj = refiner(scan.amplitudes)
  assert obj.shape == tuple(shape) and np.abs(obj).max() == 2.0
  np.testing.assert_allclose(refiner.probe, 0.5)
  for settings, phrase in (
      (dict(refine_probe=True, passes=5), "its any_scan_refine_probe runs a "
       "fixed number of passes; export it again with this version"),
      (dict(passes=2), "has no any_scan_passes signature to run --passes=2 "
       "with")):
    with pytest.raises(UserError, match=phrase):
      inference.PtychoNetModel(path, scan, **settings)
