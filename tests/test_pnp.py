"""Plug-and-play (baselines/pnp.py): its schedule, its prior step, its data steps."""
import numpy as np
import pytest
from scipy import ndimage
import tensorflow as tf

from ptychonet_tf import reconstructors
from ptychonet_tf.baselines import dm
from ptychonet_tf.baselines import pnp
from ptychonet_tf.evaluation import doses
from ptychonet_tf.evaluation import metrics
from ptychonet_tf.physics import forward
from ptychonet_tf.physics import layouts
from ptychonet_tf.physics import probe as probe_lib
from ptychonet_tf.prior import objects as prior_objects
from ptychonet_tf.utils.errors import UserError


@pytest.fixture(scope="module")
def scan():
  """A 16x16-probe Fermat scan of a smooth object (a blurred random one)."""
  probe = probe_lib.make_probe((16, 16), "zone_plate", 0.6)
  layout, shape = layouts.layout_from_positions(layouts.fermat_spiral(20, 2.0),
                                                (16, 16))
  rng = np.random.default_rng(0)
  amplitude = ndimage.gaussian_filter(rng.uniform(0.5, 1, shape), 2)
  phase = ndimage.gaussian_filter(rng.uniform(-1, 0, shape), 2)
  obj = (amplitude * np.exp(1j * phase)).astype(np.complex64)
  amps = forward.diffraction_amplitudes(obj, probe, layout).numpy()
  return amps, probe, layout, shape, obj


def identity(x, sigma):
  del sigma
  return np.asarray(x)


def blur(x, sigma):
  """A linear stand-in prior: a Gaussian blur whose width follows sigma."""
  return np.stack([ndimage.gaussian_filter(i, 20 * float(s))
                   for i, s in zip(np.asarray(x), np.asarray(sigma))])


def test_noise_levels_fall_geometrically():
  config = pnp.PnPConfig(iterations=50, chunk=10, sigma_start=0.1,
                         sigma_end=0.001, denoiser=identity)
  assert config.rounds == 5
  levels = [config.sigma(r) for r in range(5)]
  np.testing.assert_allclose(levels, [0.1, 0.1 ** 1.5, 0.01, 0.1 ** 2.5,
                                      0.001], rtol=1e-9)
  # One round: the last level.
  one = pnp.PnPConfig(iterations=5, chunk=10, denoiser=identity)
  assert one.rounds == 1 and one.sigma(0) == pytest.approx(one.sigma_end)


@pytest.mark.slow
def test_identity_prior_gives_lsqml(scan):
  """With a prior that changes nothing, PnP is its data steps: LSQML."""
  amps, probe, layout, shape, _ = scan
  settings = dict(iterations=10, chunk=5, batch_size=5, object_reg=0.1,
                  noise_model="gaussian",
                  progress=False)
  alone = reconstructors.reconstruct(
      "lsqml", amps, probe, layout, shape,
      reconstructors.configure("lsqml", **settings))
  for domain in pnp.DOMAINS:
    plugged = reconstructors.reconstruct(
        "pnp", amps, probe, layout, shape,
        reconstructors.configure("pnp", denoiser=identity, domain=domain,
                                 **settings))
    assert plugged.method == "pnp" and plugged.chi.shape == (10,)
    np.testing.assert_allclose(plugged.object, alone.object, rtol=1e-4,
                               atol=1e-5)


@pytest.mark.slow
def test_identity_prior_with_dm_data_steps_gives_dm(scan):
  """With DM's data steps and a prior that changes nothing, PnP is DM."""
  amps, probe, layout, shape, _ = scan
  settings = dict(iterations=20, chunk=5, progress=False)
  alone = reconstructors.reconstruct(
      "dm", amps, probe, layout, shape,
      reconstructors.configure("dm", **settings))
  config = reconstructors.configure("pnp", denoiser=identity,
                                    data_steps="dm", **settings)
  assert reconstructors.for_config(config) is pnp.PnPDM
  plugged = reconstructors.reconstruct("pnp", amps, probe, layout, shape,
                                       config)
  assert plugged.method == "pnp" and plugged.chi.shape == (20,)
  # The identity prior still maps the object to amplitude and phase, scales
  # them and back: float32 round-off that 20 DM iterations amplify to ~1e-4
  # (one CI run under parallel load: 8.8e-5).
  np.testing.assert_allclose(plugged.object, alone.object, rtol=1e-4,
                             atol=3e-4)


def test_dm_prior_step_shifts_the_exit_waves_by_the_object_change(scan):
  """After a prior step DM's next overlap projection moves by the prior's
  change of the object (where the probe lights it): the exit waves shift
  by P (new - old) and keep the rest."""
  amps, probe, layout, shape, obj = scan
  solver = reconstructors.build("pnp", amps, probe, layout, shape,
                                pnp.PnPConfig(denoiser=identity,
                                              data_steps="dm", chunk=3))
  assert isinstance(solver, pnp.PnPDM) and isinstance(solver.config,
                                                       dm.DMConfig)
  state = solver.initial_state(tf.ones([1, *shape], tf.complex64),
                               solver.probe)
  state, _, _, _ = dm.DifferenceMap.iterate_chunk(solver, state, 3, False)
  denoised = tf.constant(obj[None])
  psi_hat, new_obj, probe_out, norm = solver.with_object(state, denoised)
  assert new_obj is denoised and probe_out is state[2] and norm is state[3]
  op = solver.operator

  def projection(spectra):
    return op.solve_object(op.backpropagate(spectra), probe_out, 1e-9,
                           norm=norm).numpy()[0]

  moved = projection(psi_hat) - projection(state[0])
  change = (denoised - state[1]).numpy()[0]
  lit = metrics.illuminated_region(layout, shape, probe)
  assert np.abs(change[lit]).max() > 0.1
  np.testing.assert_allclose(moved[lit], change[lit], atol=1e-4)


def test_prior_step_acts_on_the_lit_region_only(scan):
  amps, probe, layout, shape, obj = scan
  solver = pnp.PnP(amps, probe, layout, shape,
                   pnp.PnPConfig(denoiser=lambda x, s: np.zeros_like(x),
                                 domain="complex"))
  lit = metrics.illuminated_region(layout, shape, probe)
  out = solver.prior_step(obj[None], 0.05).numpy()[0]
  np.testing.assert_array_equal(out[~lit], obj[~lit])
  # The zero image maps back to mean - 0.5 * std / TARGET_STD of each part
  # on the region.
  for got, part in ((out.real, obj.real), (out.imag, obj.imag)):
    want = part[lit].mean() - 0.5 * part[lit].std() / prior_objects.TARGET_STD
    np.testing.assert_allclose(got[lit], want, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("domain", pnp.DOMAINS)
def test_first_image_gets_its_sigma_scale(scan, domain):
  amps, probe, layout, shape, obj = scan
  seen = []

  def record(x, sigma):
    seen.append(np.asarray(sigma))
    return np.asarray(x)

  solver = pnp.PnP(amps, probe, layout, shape, pnp.PnPConfig(
      denoiser=record, domain=domain, first_sigma_scale=2.0))
  out = solver.prior_step(obj[None], 0.05).numpy()[0]
  np.testing.assert_allclose(seen[0], [0.1, 0.05], rtol=1e-6)
  np.testing.assert_allclose(out, obj, rtol=1e-4, atol=1e-5)
  assert pnp.PnPConfig().domain == "amplitude_phase"
  assert pnp.PnPConfig().first_sigma_scale == 2.0


@pytest.mark.slow
def test_a_smoothing_prior_beats_the_data_alone_at_low_dose(scan):
  amps, probe, layout, shape, obj = scan
  noisy = doses.noisy_scans(amps[None], 300.0)[0]
  mask = metrics.illuminated_region(layout, shape, probe, 0.1)
  settings = dict(iterations=60, chunk=10, batch_size=5, progress=False,
                  noise_model="poisson")
  alone = reconstructors.reconstruct(
      "lsqml", noisy, probe, layout, shape,
      reconstructors.configure("lsqml", **settings)).object
  plugged = reconstructors.reconstruct(
      "pnp", noisy, probe, layout, shape,
      reconstructors.configure("pnp", denoiser=blur, sigma_start=0.08,
                               sigma_end=0.03, **settings)).object
  before = metrics.complex_metrics(alone, obj, mask)
  after = metrics.complex_metrics(plugged, obj, mask)
  assert after["amplitude_psnr"] > before["amplitude_psnr"] + 1, (before,
                                                                  after)
  assert after["phase_psnr"] > before["phase_psnr"] + 1, (before, after)


@pytest.mark.parametrize("settings, fragment", [
    (dict(sigma_start=0.01, sigma_end=0.1), "sigma_end <= sigma_start"),
    (dict(sigma_end=0.0), "sigma_end <= sigma_start"),
    (dict(domain="fourier"), "domain"),
    (dict(first_sigma_scale=0.0), "first_sigma_scale"),
    (dict(iterations=0), "iterations"),
    (dict(noise_model="laplace"), "noise model"),
    (dict(data_steps="epie"), "data_steps"),
])
def test_bad_settings_are_one_line_errors(settings, fragment):
  with pytest.raises(UserError, match=fragment):
    pnp.PnPConfig(denoiser=identity, **settings)


def test_missing_prior_is_one_line(scan, tmp_path):
  amps, probe, layout, shape, _ = scan
  with pytest.raises(UserError, match="holds no prior.json"):
    pnp.PnP(amps, probe, layout, shape, pnp.PnPConfig(prior=str(tmp_path)))
