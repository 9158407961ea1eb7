"""The evaluate entry point on a tiny dataset: tables, figures, JSON, errors."""
import json
import os
import shutil

import numpy as np
import pytest

from helpers import run_cli, write_tiny
from ptychonet_tf.baselines import lsqml
from ptychonet_tf.evaluation import comparison
from ptychonet_tf.evaluation import methods
from ptychonet_tf.evaluation import report
from ptychonet_tf.data import pipeline
from ptychonet_tf.model import network
from ptychonet_tf.model import export as export_lib
from ptychonet_tf.utils.errors import UserError


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """A tiny dataset (16x16 probe, 10 positions, 2 test scans) and an untrained export."""
  root = tmp_path_factory.mktemp("evaluate")
  data_dir = write_tiny(str(root / "data"))
  geometry = pipeline.load_dataset_info(data_dir).geometry
  model = network.build_model(network.NetworkConfig(base_channels=4, depth=2), geometry)
  model(np.zeros((1, geometry.num_positions) + tuple(geometry.probe_shape), np.float32))
  export_lib.export_saved_model(model, geometry.probe, str(root / "export"), 1)
  return data_dir, str(root / "export"), root


def run_evaluate(data_dir, model, out, *extra):
  """`python -m ptychonet_tf.evaluate` on the tiny dataset, DM in pairs."""
  return run_cli(["-m", "ptychonet_tf.evaluate", f"--data_dir={data_dir}",
                  f"--saved_model={model}", f"--out_dir={out}",
                  "--dm_batch=2", *extra])


@pytest.mark.slow
def test_writes_tables_figures_and_json(setup):
  data_dir, export, root = setup
  out = str(root / "report")
  res = run_evaluate(data_dir, f"mse={export}", out, "--dm_iterations=6",
                     "--curve_every=3", "--run_lsqml", "--lsqml_batch_size=5")
  assert res.returncode == 0, res.stderr[-3000:]
  for name in ("report.md", "results.md", "results.json", "amplitude.png",
               "phase.png", "curves.png", "time_to_quality.png"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  assert not [n for n in os.listdir(out) if ".tmp" in n]
  with open(os.path.join(out, "results.json")) as f:
    results = json.load(f)
  methods = results["methods"]
  equal = results["equal_time"]
  assert equal["model"] == "PtychoNet-MSE" and equal["iterations"] >= 1
  equal_row = (f"{comparison.DM_EQUAL_TIME} ({equal['iterations']} it, flat "
               f"start)")
  lsqml_row = f"{comparison.LSQML} (6 it, flat start)"
  assert list(methods) == ["PtychoNet-MSE", "DM (random start)", "DM (flat start)",
                           lsqml_row, "PtychoNet-MSE+DM", equal_row,
                           comparison.MEAN_OBJECT]
  # As many DM iterations as fit in the network's seconds per scan.
  per_iteration = methods["DM (flat start)"]["seconds_per_scan"] / 6
  assert equal["seconds_per_iteration"] == pytest.approx(per_iteration)
  assert equal["iterations"] == max(1, int(
      methods["PtychoNet-MSE"]["seconds_per_scan"] // per_iteration))
  assert methods[equal_row]["seconds_per_scan"] == pytest.approx(
      equal["iterations"] * per_iteration)
  for name, m in methods.items():
    assert len(m["per_scan"]["scanned"]) == 2
    assert (m["seconds_per_scan"] > 0) == (name != comparison.MEAN_OBJECT)
    for convention in ("scanned", "paper"):
      assert np.isfinite(m["mean"][convention]["amplitude_ssim"]["mean"])
  curves = results["curves"]
  assert len(curves["random start"]["chi"]) == 6
  assert curves["random start"]["iterations"] == [3, 6]
  flat = curves["flat start"]
  assert flat["seconds"] == pytest.approx(
      [3 * per_iteration, 6 * per_iteration])
  assert flat["amplitude_psnr"][-1] == pytest.approx(
      methods["DM (flat start)"]["mean"]["scanned"]["amplitude_psnr"]["mean"],
      abs=1e-3)
  lsqml = curves["LSQML, flat start"]
  assert lsqml["label"] == "LSQML from flat start"
  assert lsqml["iterations"] == [3, 6] and len(lsqml["chi"]) == 6
  assert lsqml["phase_psnr"][-1] == pytest.approx(
      methods[lsqml_row]["mean"]["scanned"]["phase_psnr"]["mean"], abs=1e-3)
  # DM from the network starts after the network's seconds.
  start = curves["PtychoNet-MSE start"]["seconds"][0]
  assert start > methods["PtychoNet-MSE"]["seconds_per_scan"]
  assert results["speedup"] == pytest.approx(
      methods["DM (random start)"]["seconds_per_scan"] / methods["PtychoNet-MSE"]["seconds_per_scan"])
  with open(os.path.join(out, "report.md")) as f:
    text = f.read()
  assert "| PtychoNet-MSE+DM |" in text and "![curves.png](curves.png)" in text


def damaged_copy(data_dir, out):
  """A copy of `data_dir` whose first test shard has 4 bytes flipped inside
  record 0's payload (as `printf '\\xff\\xff\\xff\\xff' | dd of=SHARD bs=1
  seek=5000 conv=notrunc` does); returns (copy, shard)."""
  shutil.copytree(data_dir, out)
  shard = os.path.join(out, "test-00000-of-00002.tfrecord")
  with open(shard, "r+b") as f:
    f.seek(5000)
    f.write(b"\xff\xff\xff\xff")
  return out, shard


@pytest.mark.slow
def test_dose_sweep(setup):
  """--photons=LIST: each method at each dose, the same noisy draw for all."""
  data_dir, export, root = setup
  out = str(root / "doses")
  # No DM at equal time (a row of the main table alone, which
  # test_writes_tables_figures_and_json checks).
  res = run_evaluate(data_dir, f"net={export}", out, "--dm_iterations=4",
                     "--curve_every=2", "--photons=1e3,inf", "--run_lsqml",
                     "--lsqml_batch_size=5", "--nodm_equal_time")
  assert res.returncode == 0, res.stderr[-3000:]
  with open(os.path.join(out, "doses.json")) as f:
    rows = json.load(f)
  methods = ["net", "DM (flat start)", f"{comparison.LSQML} (4 it, flat "
             "start)", "net+DM"]
  assert [(r["dose"], r["method"]) for r in rows] == [
      (d, m) for d in ("1000", "noise free") for m in methods]
  assert rows[0]["photons"] == 1000 and rows[4]["photons"] is None
  assert all(len(r["per_scan"]) == 2 for r in rows)
  # The network and DM after it saw the same noisy amplitudes; noise-free
  # rows score the network as the main table does.
  with open(os.path.join(out, "results.json")) as f:
    main = json.load(f)["methods"]["net"]
  assert rows[4]["mean"]["phase_psnr"]["mean"] == pytest.approx(
      main["mean"]["scanned"]["phase_psnr"]["mean"], abs=1e-4)
  assert rows[3]["seconds"] > rows[0]["seconds"]  # includes the network's
  with open(os.path.join(out, "report.md")) as f:
    text = f.read()
  assert "## Dose sweep" in text and "| noise free | net+DM |" in text
  assert os.path.getsize(os.path.join(out, "doses.png")) > 0
  assert not [n for n in os.listdir(out) if ".tmp" in n]


def test_damaged_test_shard_is_named(setup, tmp_path):
  data_dir, _, _ = setup
  damaged, shard = damaged_copy(data_dir, str(tmp_path / "damaged"))
  with pytest.raises(UserError) as raised:
    comparison.read_test_split(damaged)
  message = str(raised.value)
  assert message.startswith(f"TFRecord shard {shard} is corrupt: record 0 "
                            f"fails its checksum; run python "
                            f"tools/check_tfrecords.py --data_dir={damaged} "
                            f"--parse")
  assert "\n" not in message
  amplitudes, truths, _ = comparison.read_test_split(data_dir)  # the original
  assert len(amplitudes) == len(truths) == 2


def test_summarize_leaves_out_exact_agreement():
  per_scan = [dict(amplitude_psnr=10.0, amplitude_ssim=0.5, phase_psnr=float("inf"),
                   phase_ssim=1.0),
              dict(amplitude_psnr=20.0, amplitude_ssim=0.7, phase_psnr=30.0,
                   phase_ssim=0.9)]
  s = report.summarize(per_scan)
  assert s["amplitude_psnr"]["mean"] == pytest.approx(15.0)
  assert s["amplitude_psnr"]["std"] == pytest.approx(5.0)
  assert s["phase_psnr"] == {"mean": 30.0, "std": 0.0, "exact": 1}


def test_speed_words_say_slower_below_one():
  # A model slower than DM (DM seconds / model seconds 0.62, as a sparse
  # model with prior steps measured) was reported "1x faster".
  assert comparison.speed_words(0.62) == "1.6x slower"
  assert comparison.speed_words(1.34) == "1.3x faster"
  assert comparison.speed_words(12.7) == "13x faster"




@pytest.mark.slow
def test_compare_runs_from_python_with_a_pnp_row(setup, tmp_path):
  """comparison.compare is the evaluation without a subprocess: the model,
  DM, LSQML and PnP (here with an identity prior: LSQML with PnP's object
  regulariser and Poisson noise model)."""
  data_dir, export, _ = setup
  settings = comparison.ComparisonSettings(
      dm_iterations=4, curve_every=2, dm_batch=2, dm_equal_time=False,
      run_lsqml=True, lsqml_batch_size=5, run_pnp=True)
  out = comparison.compare(data_dir, str(tmp_path / "report"),
                           [("net", export)], settings,
                           denoiser=lambda x, sigma: x)
  results = out["results"]
  pnp_row = f"{comparison.PNP} (4 it, learned prior)"
  lsqml_row = f"{comparison.LSQML} (4 it, flat start)"
  assert {"net", "DM (random start)", "DM (flat start)", lsqml_row, pnp_row,
          "net+DM", comparison.MEAN_OBJECT} == set(results)
  amplitudes, truths, info = comparison.read_test_split(data_dir)
  plain = methods.run_solver(
      amplitudes, truths, info.geometry,
      lsqml.LSQMLConfig(iterations=4, batch_size=5, object_reg=1.0,
                        noise_model="poisson", progress=False), batch=2)[0]
  np.testing.assert_allclose(results[pnp_row]["objects"], plain, atol=1e-5)
  assert os.path.isfile(tmp_path / "report" / "report.md")
  assert pnp_row in out["tables"]


def test_scored_split_has_evaluates_noise_draw_and_its_region(tmp_path):
  """benchmarks/ read scans through comparison.read_scored_split: the
  split, redrawn as `evaluate --photons` redraws it, and the scored region."""
  from ptychonet_tf.evaluation import doses  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.evaluation import metrics  # pylint: disable=g-import-not-at-top
  data_dir = write_tiny(str(tmp_path / "d"), num_train=2, num_test=3,
                        num_shards=1)
  amplitudes, truths, info = comparison.read_test_split(data_dir, 2)
  clean, clean_truths, geometry, region = comparison.read_scored_split(
      data_dir, 2)
  np.testing.assert_array_equal(clean, amplitudes)
  np.testing.assert_array_equal(clean_truths, truths)
  g = info.geometry
  np.testing.assert_array_equal(
      region, metrics.illuminated_region(g.layout, g.object_shape, g.probe))
  assert geometry.object_shape == g.object_shape
  noisy, _, _, _ = comparison.read_scored_split(data_dir, 2, photons=1e3,
                                                seed=4)
  np.testing.assert_array_equal(noisy,
                                doses.noisy_scans(amplitudes, 1e3, seed=4))
  assert not np.allclose(noisy, amplitudes)
