"""cli helpers in-process: required flags in one line, the make-dataset command."""
from absl import flags
from absl.testing import flagsaver
import os
import sys

import pytest

from helpers import REPO
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


def test_every_config_names_its_folders():
  for name in ("dense", "sparse", "small_dense", "small_sparse"):
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
