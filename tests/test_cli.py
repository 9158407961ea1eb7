"""cli helpers in-process: required flags in one line, the make-dataset command."""
from absl import flags
from absl.testing import flagsaver
import json
import os
import sys

import numpy as np
import pytest

from helpers import REPO, run_cli
from ptychonet_tf import cli
from ptychonet_tf.cli import experiment_flags
from ptychonet_tf.cli import stages as stages_lib
from ptychonet_tf.utils.errors import UserError

experiment_flags.define_experiment_flags()


@pytest.fixture(autouse=True)
def parsed():
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()


def test_require_flags_names_every_missing_flag():
  with flagsaver.flagsaver(data_dir=None, model_dir=None, export_dir="x"):
    with pytest.raises(UserError, match=r"^--data_dir and --model_dir are "
                       r"required"):
      cli.require_flags("data_dir", "model_dir", "export_dir")
  with flagsaver.flagsaver(data_dir="d", model_dir=None):
    with pytest.raises(UserError, match=r"^--model_dir is required"):
      cli.require_flags("data_dir", "model_dir")
    cli.require_flags("data_dir")


def test_make_dataset_command_repeats_the_flagfiles(tmp_path):
  argv = ["--flagfile=configs/dense.flags", "--epochs=2", "--flagfile",
          "extra.flags"]
  assert experiment_flags.given_flagfiles(argv) == ["configs/dense.flags",
                                                    "extra.flags"]
  assert experiment_flags.make_dataset_command("tfrecords/dense", argv) == (
      "python tools/make_tfrecords.py --flagfile=configs/dense.flags "
      "--flagfile=extra.flags --out_dir=tfrecords/dense")
  with pytest.raises(UserError, match="make it with: python tools/"):
    experiment_flags.require_dataset(str(tmp_path / "nope"))
  experiment_flags.require_dataset(str(tmp_path))  # exists: the pipeline checks it


EXPERIMENTS = ("dense", "sparse", "small_dense", "small_sparse",
               "small_dense_noisy", "small_dense_1e3", "small_any")


def test_every_config_names_its_folders():
  for name in EXPERIMENTS:
    with open(os.path.join(REPO, "configs", f"{name}.flags")) as f:
      text = f.read()
    for line in (f"--data_dir=tfrecords/{name}", f"--model_dir=runs/{name}",
                 f"--export_dir=saved_models/{name}"):
      assert line in text.splitlines(), (name, line)


def test_stages_time_each_command_and_name_a_failed_one(capsys):
  stages = stages_lib.Stages(2)
  stages.run("first", [sys.executable, "-c", "print('hello')"])
  out = capsys.readouterr().out
  assert "=== [1/2] first" in out and "$ " in out
  assert [t for t, _ in stages.times] == ["first"]
  with pytest.raises(UserError, match="stage 'second' failed with exit "
                     "status 3"):
    stages.run("second", [sys.executable, "-c", "raise SystemExit(3)"])
  assert stages_lib.fmt(187) == "3m07s"


def _run_script(folder, source):
  """Runs `source` as a script of its own (tools/siemens_star.py's module
  defines absl flags: a process each), forked from the tests' process that
  has imported TensorFlow (helpers.run_cli); the finished process."""
  path = folder / "script.py"
  path.write_text(source)
  out = run_cli([str(path)])
  assert out.returncode == 0, out.stderr[-2000:]
  return out


@pytest.mark.slow
def test_siemens_star_learned_figure_has_a_panel_per_method(tmp_path):
  """tools/siemens_star.py --learned's figure: the misfit curves with a
  marker per single-call method, and one phase panel per object, each on
  its own scan."""
  script = f"""
import types
import numpy as np
from PIL import Image
from ptychonet_tf.cli import siemens_star
from ptychonet_tf.physics import layouts
layout, shape = layouts.layout_from_positions(
    layouts.fermat_spiral(12, 2.0), (8, 8))
scan = types.SimpleNamespace(layout=layout, object_shape=shape,
                             amplitudes=np.ones((12, 8, 8), np.float32))
half = types.SimpleNamespace(layout=layout[:6], object_shape=shape,
                             amplitudes=np.ones((6, 8, 8), np.float32))
probe = np.ones((8, 8), np.complex64)
obj = np.exp(1j * np.random.default_rng(0).uniform(-1, 0, shape))
curves = {{"DM": {{"seconds": np.arange(1, 4.0),
                  "fourier_error": np.array([0.3, 0.1, 0.05])}}}}
points = [("learned", 0.5, 0.06), ("learned + probe", 0.5, 0.04)]
panels = [("DM", scan, obj, probe), ("LSQML", scan, obj, probe),
          ("learned", scan, obj, probe), ("hold-out", half, obj, probe)]
siemens_star.draw_learned({str(tmp_path / "f.png")!r}, curves, points,
                          panels, "title")
print(Image.open({str(tmp_path / "f.png")!r}).size)
"""
  import ast  # pylint: disable=g-import-not-at-top
  out = _run_script(tmp_path, script)
  width, height = ast.literal_eval(out.stdout.strip().splitlines()[-1])
  assert width > 4.5 * height  # five panels of about one height each


@pytest.mark.slow
def test_siemens_star_rescore_rewrites_the_holdout_section(tmp_path):
  """--learned_rescore scores the saved reconstructions again (no
  reconstruction) and replaces only the report's hold-out section: a copy
  of the reference with a phase ramp, a scale and a shift scores 1 after
  the blind alignment, less after the shift and constant phase only."""
  script = f"""
import json
import numpy as np
from scipy import ndimage
from absl import flags
from ptychonet_tf.cli import siemens_star
flags.FLAGS([\"x\", \"--learned_reports_dir={tmp_path}\"])
rng = np.random.default_rng(0)
reference = np.exp(1j * ndimage.gaussian_filter(rng.normal(size=(32, 40)), 2)
                   * 6)
y, x = np.mgrid[:32, :40]
ramped = np.fft.ifft2(ndimage.fourier_shift(np.fft.fft2(
    reference * np.exp(0.3j * y - 0.2j * x) * 3), (0.5, -1.0)))
region = np.zeros((32, 40), bool)
region[6:26, 8:32] = True
siemens_star.save_holdout(
    {str(tmp_path / "siemens_star_learned.npz")!r},
    [(siemens_star.TARGET_ROW, ramped, 0.5), ("context", reference, None)],
    (reference, reference), region, dict(iterations=7, fine_tune_epochs=1))
with open({str(tmp_path / "siemens_star_learned.json")!r}, "w") as f:
  json.dump(dict(stages=[["fine-tune", 65.0]], holdout=[]), f)
with open({str(tmp_path / "siemens_star_learned.md")!r}, "w") as f:
  f.write("# head\\n\\nkept\\n\\n## Spatial hold-out\\n\\nold table\\n")
siemens_star.rescore()
"""
  _run_script(tmp_path, script)
  with open(tmp_path / "siemens_star_learned.md") as f:
    text = f.read()
  assert text.startswith("# head\n\nkept\n\n## Spatial hold-out")
  assert "old table" not in text and "fine-tune 1m05s" in text
  assert "against DM-7 on the lower half >= 0.95: 1.000, met" in text
  with open(tmp_path / "siemens_star_learned.json") as f:
    rows = json.load(f)["holdout"]
  assert rows[0]["phase_ssim"] > 0.999 and rows[0]["scale"] == (
      pytest.approx(1 / 3, rel=1e-6))
  assert rows[0]["phase_ssim_constant"] < 0.5
  assert rows[1]["phase_ssim_context"] is None  # the context reference


@pytest.mark.slow  # a fresh command: ~10 s on a loaded 2-core machine
def test_siemens_star_learned_without_a_model_ends_in_one_line(tmp_path):
  """--learned with a SavedModel that is not there: exit 2 and one line
  naming it, before the scan is read or any DM runs."""
  from helpers import assert_one_line_error, run_cli  # pylint: disable=g-import-not-at-top
  data = tmp_path / "star.npz"
  np.savez(data, data=np.ones((1, 4, 16, 16), np.float32),
           scan=np.zeros((1, 4, 2), np.float32))
  missing = str(tmp_path / "no_model")
  result = run_cli(["tools/siemens_star.py", "--learned", f"--data={data}",
                    f"--learned_model={missing}", f"--out={tmp_path}/s.png"])
  assert result.returncode == 2
  assert_one_line_error(result, f"--learned_model={missing} does not exist")
  assert "DM" not in result.stdout and "read " not in result.stdout
