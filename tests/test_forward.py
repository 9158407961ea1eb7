"""The forward model against a direct DFT sum.

The extract/stitch pair is tested in tests/test_windows.py.
"""
import numpy as np
import tensorflow as tf

from ptychonet_tf.physics import forward
from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import probe as probe_lib


def _tiny_case(seed=0, shape=(8, 6)):
  rng = np.random.default_rng(seed)
  layout, obj_shape = layouts.layout_from_positions(layouts.mesh(2, 3, 3), shape)
  obj = (rng.uniform(0.5, 1, obj_shape) *
         np.exp(1j * rng.uniform(-1, 0, obj_shape))).astype(np.complex64)
  probe = (rng.normal(size=shape) + 1j * rng.normal(size=shape)).astype(np.complex64)
  return obj, probe, layout


def test_amplitudes_match_direct_dft_sum():
  obj, probe, layout = _tiny_case()
  h, w = probe.shape
  amps = forward.diffraction_amplitudes(obj, probe, layout).numpy()
  # Direct sum: F[u, v] = sum_{y,x} psi[y, x] exp(-2 pi i (u y / h + v x / w)),
  # detector index k holds frequency k - h//2 (zero frequency at the centre).
  u = (np.arange(h) - h // 2)[:, None]
  v = (np.arange(w) - w // 2)[:, None]
  ey = np.exp(-2j * np.pi * u * np.arange(h)[None, :] / h)  # [u, y]
  ex = np.exp(-2j * np.pi * v * np.arange(w)[None, :] / w)  # [v, x]
  for j, (t, b, l, r) in enumerate(layout):
    psi = probe.astype(np.complex128) * obj[t:b, l:r]
    direct = np.abs(ey @ psi @ ex.T) / np.sqrt(h * w)
    np.testing.assert_allclose(amps[j], direct, rtol=1e-4, atol=1e-5)


def test_far_field_is_unitary_and_invertible():
  rng = np.random.default_rng(1)
  psi = (rng.normal(size=(3, 16, 12)) + 1j * rng.normal(size=(3, 16, 12))).astype(np.complex64)
  spec = forward.far_field(psi).numpy()
  np.testing.assert_allclose((np.abs(spec) ** 2).sum(), (np.abs(psi) ** 2).sum(), rtol=1e-5)
  np.testing.assert_allclose(forward.inverse_far_field(spec).numpy(), psi, atol=1e-5)
  # Zero frequency at (h//2, w//2): a constant field lands there.
  dc = forward.far_field(np.ones((16, 12), np.complex64)).numpy()
  assert np.unravel_index(np.abs(dc).argmax(), dc.shape) == (8, 6)


def test_batched_forward_equals_per_object():
  obj, probe, layout = _tiny_case(4)
  batch = np.stack([obj, obj.conj(), 0.5 * obj])
  amps = forward.diffraction_amplitudes(batch, probe, layout).numpy()
  for i in range(3):
    np.testing.assert_allclose(
        amps[i], forward.diffraction_amplitudes(batch[i], probe, layout).numpy(), rtol=1e-5)


def test_poisson_noise_level_and_determinism():
  probe = probe_lib.make_probe((16, 16))
  layout, shape = layouts.layout_from_positions(layouts.mesh(3, 3, 4), (16, 16))
  amps = forward.diffraction_amplitudes(np.ones(shape, np.complex64), probe, layout).numpy()
  noisy = forward.poisson_amplitudes(amps, 1e4, seed=7)
  np.testing.assert_array_equal(noisy, forward.poisson_amplitudes(amps, 1e4, seed=7))
  rel = np.linalg.norm(noisy ** 2 - amps ** 2) / np.linalg.norm(amps ** 2)
  assert 0.001 < rel < 0.2
  assert (noisy >= 0).all() and noisy.dtype == np.float32
  low = forward.poisson_amplitudes(amps, 1e2, seed=7)
  assert np.linalg.norm(low ** 2 - amps ** 2) > np.linalg.norm(noisy ** 2 - amps ** 2)


def test_forward_inside_tf_function_with_tensor_layout():
  # The layout is a concrete (eager) tensor, as the simulator passes it; the
  # window operator reads its values once (tests/test_windows.py).
  obj, probe, layout = _tiny_case(5)
  tensor = tf.constant(layout)
  fn = tf.function(lambda o: forward.diffraction_amplitudes(o, probe, tensor))
  np.testing.assert_allclose(fn(obj).numpy(),
                             forward.diffraction_amplitudes(obj, probe, layout).numpy(),
                             rtol=1e-6)
