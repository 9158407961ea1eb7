"""Dose sweeps (evaluation.doses): parsing, noisy copies, the sweep's rows."""
import math

import numpy as np
import pytest

from ptychonet_tf.evaluation import doses
from ptychonet_tf.evaluation import report
from ptychonet_tf.physics import forward
from ptychonet_tf.utils.errors import UserError


def test_parse_doses():
  assert doses.parse_doses(["1e3", "10000", "inf"]) == [1e3, 1e4, math.inf]
  assert doses.parse_doses(["0"]) == [doses.NOISE_FREE]
  with pytest.raises(UserError, match="'lots' is not a number"):
    doses.parse_doses(["lots"])
  with pytest.raises(UserError, match="'-5' must be >= 0"):
    doses.parse_doses(["1e4", "-5"])
  with pytest.raises(UserError, match="repeats a dose"):
    doses.parse_doses(["0", "inf"])  # both mean noise free
  assert doses.label(math.inf) == "noise free" and doses.label(1e4) == "10000"


def _amplitudes():
  rng = np.random.default_rng(0)
  obj = np.exp(1j * rng.uniform(-1, 0, (3, 24, 24))).astype(np.complex64)
  layout = np.array([[0, 16, 0, 16], [8, 24, 8, 24]])
  probe = np.ones((16, 16), np.complex64)
  return forward.diffraction_amplitudes(obj, probe, layout).numpy()


def test_noisy_scans_hold_the_dose_and_stay_in_noise_free_units():
  clean = _amplitudes()
  np.testing.assert_array_equal(doses.noisy_scans(clean, math.inf), clean)
  for dose in (1e3, 1e5):
    noisy = doses.noisy_scans(clean, dose, seed=1)
    assert noisy.shape == clean.shape and noisy.dtype == np.float32
    # Counts = I * dose / mean total of the scan: their mean per pattern is
    # the dose, within Poisson's relative spread 1/sqrt(2 patterns * dose).
    for scan_noisy, scan_clean in zip(noisy, clean):
      scale = dose / np.square(scan_clean).sum(axis=(-2, -1)).mean()
      counts = np.square(scan_noisy) * scale
      np.testing.assert_allclose(counts, np.round(counts), atol=1e-2)
      assert counts.sum(axis=(-2, -1)).mean() == pytest.approx(
          dose, rel=5 / math.sqrt(2 * dose))
    np.testing.assert_array_equal(doses.noisy_scans(clean, dose, seed=1), noisy)
    assert not np.array_equal(doses.noisy_scans(clean, dose, seed=2), noisy)
  # Higher dose, closer to the noise-free amplitudes.
  errors = [np.abs(doses.noisy_scans(clean, d) - clean).mean()
            for d in (1e2, 1e4, 1e6)]
  assert errors[0] > errors[1] > errors[2]


def test_sweep_rows_same_draw_for_every_method_and_earlier_results():
  clean = _amplitudes()
  seen = []

  def first(noisy, earlier):
    assert earlier == {}
    seen.append(noisy)
    return noisy[:, 0].astype(np.complex64), 0.5

  def second(noisy, earlier):
    np.testing.assert_array_equal(noisy, seen[-1])  # the same noisy draw
    objects, seconds = earlier["first"]
    return objects * 2, seconds + 1.0

  scores = lambda objects: {"scanned": [{"value": float(objects.real.mean())}]}
  rows = doses.sweep(clean, [1e3, math.inf], [("first", first),
                                              ("second", second)], scores)
  assert [(r["photons"], r["method"]) for r in rows] == [
      (1e3, "first"), (1e3, "second"), (math.inf, "first"),
      (math.inf, "second")]
  assert [r["seconds"] for r in rows] == [0.5, 1.5, 0.5, 1.5]
  np.testing.assert_array_equal(seen[1], clean)
  assert rows[1]["scores"]["scanned"][0]["value"] == pytest.approx(
      2 * rows[0]["scores"]["scanned"][0]["value"])


def test_dose_table_and_plot(tmp_path):
  metric = {"amplitude_psnr": 20.0, "amplitude_ssim": 0.5, "phase_psnr": 15.0,
            "phase_ssim": 0.4}
  rows = [{"photons": p, "method": m, "seconds": 0.1,
           "scores": {"scanned": [metric, metric]}}
          for p in (1e3, math.inf) for m in ("learned", "DM")]
  table = report.dose_table(rows)
  assert table.count("\n") == 5
  assert "| 1000 | learned | 20.00 ± 0.00 | 0.500 ± 0.000 | 15.00" in table
  assert "| noise free | DM |" in table
  report.save_dose_plot(str(tmp_path / "d.png"), rows, title="t")
  assert (tmp_path / "d.png").stat().st_size > 0
