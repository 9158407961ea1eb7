"""The evaluate entry point on a tiny dataset: tables, figures, JSON, errors."""
import json
import os

import numpy as np
import pytest

from helpers import assert_one_line_error, run_cli, write_tiny
from ptychonet_tf.evaluation import comparison
from ptychonet_tf.evaluation import report
from ptychonet_tf.data import pipeline
from ptychonet_tf.model import network
from ptychonet_tf.model import export as export_lib


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


@pytest.mark.slow
def test_writes_tables_figures_and_json(setup):
  data_dir, export, root = setup
  out = str(root / "report")
  res = run_cli(["-m", "ptychonet_tf.evaluate", f"--data_dir={data_dir}",
                 f"--saved_model=mse={export}", f"--out_dir={out}",
                 "--dm_iterations=6", "--curve_every=3", "--dm_batch=2"])
  assert res.returncode == 0, res.stderr[-3000:]
  for name in ("report.md", "results.md", "results.json", "amplitude.png",
               "phase.png", "curves.png"):
    assert os.path.getsize(os.path.join(out, name)) > 0, name
  assert not [n for n in os.listdir(out) if ".tmp" in n]
  with open(os.path.join(out, "results.json")) as f:
    results = json.load(f)
  methods = results["methods"]
  assert list(methods) == ["PtychoNet-MSE", "DM", "DM (flat start)",
                           "PtychoNet-MSE+DM", comparison.MEAN_OBJECT]
  for name, m in methods.items():
    assert len(m["per_scan"]["scanned"]) == 2
    assert (m["seconds_per_scan"] > 0) == (name != comparison.MEAN_OBJECT)
    for convention in ("scanned", "paper"):
      assert np.isfinite(m["mean"][convention]["amplitude_ssim"]["mean"])
  curves = results["curves"]
  assert len(curves["random start"]["chi"]) == 6
  assert curves["random start"]["mse_iterations"] == [3, 6]
  assert results["speedup"] == pytest.approx(
      methods["DM"]["seconds_per_scan"] / methods["PtychoNet-MSE"]["seconds_per_scan"])
  with open(os.path.join(out, "report.md")) as f:
    text = f.read()
  assert "| PtychoNet-MSE+DM |" in text and "![curves.png](curves.png)" in text


def test_summarize_leaves_out_exact_agreement():
  per_scan = [dict(amplitude_psnr=10.0, amplitude_ssim=0.5, phase_psnr=float("inf"),
                   phase_ssim=1.0),
              dict(amplitude_psnr=20.0, amplitude_ssim=0.7, phase_psnr=30.0,
                   phase_ssim=0.9)]
  s = report.summarize(per_scan)
  assert s["amplitude_psnr"]["mean"] == pytest.approx(15.0)
  assert s["amplitude_psnr"]["std"] == pytest.approx(5.0)
  assert s["phase_psnr"] == {"mean": 30.0, "std": 0.0, "exact": 1}


@pytest.mark.slow
def test_errors_are_one_line(setup, tmp_path):
  data_dir, export, _ = setup
  base = ["-m", "ptychonet_tf.evaluate", f"--data_dir={data_dir}",
          f"--out_dir={tmp_path / 'r'}", "--dm_iterations=2"]
  assert_one_line_error(run_cli(base + [f"--saved_model={tmp_path / 'nope'}"]),
                        "does not exist")
  assert_one_line_error(run_cli(base + ["--probe_size=32,32"]), "conflicts")
  empty = tmp_path / "empty"
  empty.mkdir()
  assert_one_line_error(run_cli(["-m", "ptychonet_tf.evaluate", f"--data_dir={empty}",
                                 f"--out_dir={tmp_path / 'r'}"]), str(empty))
  afile = tmp_path / "file"
  afile.write_text("x")
  assert_one_line_error(run_cli(base[:3] + [f"--out_dir={afile}"]), "is a file")
