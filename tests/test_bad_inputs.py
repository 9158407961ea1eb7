"""The single list of bad inputs and faults we know of, and what each gets.

Every row runs one command as a user would type it (a subprocess from the
repository root) on files the fixture makes, and checks its exit status and,
for refusals, that stderr ends in one line `error: ...` holding the expected
phrase, with no traceback; rows that may go on check for a one-line
`warning: ...` instead. README.md's "Errors" section summarises the classes.
Runs in the slow tier (each row starts Python and TensorFlow); the library
checks behind the rows have fast in-process tests in the other test files.
"""
import dataclasses
import os
import shutil
from typing import Callable, Optional, Sequence

import h5py
import numpy as np
import pytest
from PIL import Image

from helpers import GEOMETRY_FLAGS, run_cli, snapshot, write_tiny

pytestmark = pytest.mark.slow


@dataclasses.dataclass(frozen=True)
class Case:
  """One row: `python ARGS` (ARGS formatted with the fixture's paths)."""
  name: str
  args: Sequence[str]
  status: int = 2
  phrase: str = ""
  warning: str = ""
  check: Optional[Callable] = None  # check(paths, result) after the run


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
  """Files every row may name: {key: path}."""
  # Imports here so that collecting the slow tier stays cheap.
  from ptychonet_tf.data import scanfile  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.model import export as export_lib  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.model import network  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.physics import forward  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.physics import geometry as geometry_lib  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.physics import layouts  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.physics import probe as probe_lib  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.data import writer  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.physics import objects  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.physics import simulator  # pylint: disable=g-import-not-at-top

  root = tmp_path_factory.mktemp("bad")
  p = {"root": str(root)}
  p["data"] = write_tiny(str(root / "data"))
  # A scan and a SavedModel of the same layout, made with different probes.
  layout, shape = layouts.layout_from_positions(layouts.mesh(3, 3, 5), (16, 16))
  probe = probe_lib.make_probe((16, 16), "zone_plate", 0.5)
  other = probe_lib.make_probe((16, 16), "zone_plate", 0.6)
  rng = np.random.default_rng(0)
  obj = np.exp(1j * rng.uniform(-1, 0, shape)).astype(np.complex64)
  for key, pr in (("scan", probe), ("other_probe_scan", other)):
    amps = forward.diffraction_amplitudes(obj, pr, layout).numpy()
    p[key] = str(root / f"{key}.npz")
    scanfile.Scan(amplitudes=amps, layout=layout, probe=pr, object_shape=shape,
                  object=obj).save(p[key])
  geometry = geometry_lib.Geometry(probe=probe, layout=layout,
                                   object_shape=shape)
  model = network.build_model(network.NetworkConfig(base_channels=4, depth=2),
                              geometry)
  p["export"] = str(root / "export")
  export_lib.export_saved_model(model, probe, p["export"], 1)
  # Scan files whose arrays do not fit together (written without validation).
  base = dict(amplitudes=np.abs(np.fft.fft2(np.ones((9, 16, 16)))),
              layout=layout, probe=probe,
              object_shape=np.asarray(shape, np.int32))
  nan = base["amplitudes"].copy()
  nan[3, 2, 2] = np.nan
  for key, change in (("scan_probe8", dict(probe=probe[:8, :8])),
                      ("scan_nan", dict(amplitudes=nan)),
                      ("scan_negative", dict(amplitudes=-base["amplitudes"])),
                      ("scan_outside", dict(layout=layout + 40))):
    p[key] = str(root / f"{key}.npz")
    np.savez(p[key], **dict(base, **change))
  p["h5_no_data"] = str(root / "no_data.h5")
  with h5py.File(p["h5_no_data"], "w") as f:
    f["entry_1/instrument_1/detector_1/distance"] = 1.0
  # A dataset folder without a dataset, and one whose shards are gone.
  p["empty"] = str(root / "empty")
  os.makedirs(p["empty"])
  p["no_shards"] = str(root / "no_shards")
  shutil.copytree(p["data"], p["no_shards"])
  for name in os.listdir(p["no_shards"]):
    if name.endswith(".tfrecord"):
      os.remove(os.path.join(p["no_shards"], name))
  # Files that are not what their names say.
  p["text_npz"] = str(root / "notes.npz")
  with open(p["text_npz"], "w") as f:
    f.write("amplitudes are in the other file\n")
  p["png_npz"] = str(root / "picture.npz")
  Image.fromarray(np.zeros((20, 20), np.uint8)).save(p["png_npz"], format="PNG")
  p["tiny_png"] = str(root / "tiny.png")
  Image.fromarray(np.full((1, 1), 128, np.uint8)).save(p["tiny_png"])
  p["image"] = str(root / "image.png")
  Image.fromarray((rng.random((64, 64)) * 255).astype(np.uint8)).save(p["image"])
  p["afile"] = str(root / "afile")
  with open(p["afile"], "w") as f:
    f.write("x")
  p["probe32"] = str(root / "probe32.npy")
  np.save(p["probe32"], np.ones((32, 32), np.complex64))
  # A dataset with a truncated shard.
  p["truncated"] = str(root / "truncated")
  shutil.copytree(p["data"], p["truncated"])
  shard = os.path.join(p["truncated"], "train-00000-of-00002.tfrecord")
  with open(shard, "r+b") as f:
    f.truncate(os.path.getsize(shard) - 100)
  # Phase-only objects: a constant true amplitude.
  p["phase_only"] = str(root / "phase_only")
  sim = simulator.SimulationConfig(
      geometry=geometry_lib.GeometryConfig(
          probe=geometry_lib.ProbeConfig(size=(16, 16)),
          scan=geometry_lib.ScanConfig(pattern="fermat", count=10, step=1.5)),
      object=objects.ObjectConfig(mode="phase_only"))
  writer.write_dataset(writer.WriteConfig(simulation=sim, num_train=0,
                                          num_test=2, num_shards=1),
                       p["phase_only"], workers=1, progress=False)
  # Noisy test scans (1e4 photons per pattern).
  p["noisy"] = str(root / "noisy")
  sim = simulator.SimulationConfig(
      geometry=geometry_lib.GeometryConfig(
          probe=geometry_lib.ProbeConfig(size=(16, 16)),
          scan=geometry_lib.ScanConfig(pattern="fermat", count=10, step=1.5)),
      photons=1e4)
  writer.write_dataset(writer.WriteConfig(simulation=sim, num_train=0,
                                          num_test=2, num_shards=1),
                       p["noisy"], workers=1, progress=False)
  # Shards with a flipped payload byte (the framing still checks out).
  for key, shard_name in (("damaged", "train-00000-of-00002.tfrecord"),
                          ("damaged_test", "test-00000-of-00002.tfrecord")):
    p[key] = str(root / key)
    shutil.copytree(p["data"], p[key])
    with open(os.path.join(p[key], shard_name), "r+b") as f:
      f.seek(5000)
      f.write(b"\xff\xff\xff\xff")
  # Datasets of other settings and another geometry, and a trained run.
  p["data6"] = write_tiny(str(root / "data6"), num_train=6)
  p["wide"] = str(root / "wide")
  wide = simulator.SimulationConfig(geometry=geometry_lib.GeometryConfig(
      probe=geometry_lib.ProbeConfig(size=(32, 32)),
      scan=geometry_lib.ScanConfig(pattern="fermat", count=10, step=3.0)))
  writer.write_dataset(writer.WriteConfig(simulation=wide, num_train=2,
                                          num_test=1, num_shards=1),
                       p["wide"], workers=1, progress=False)
  p["run_a"] = str(root / "run_a")
  result = run_cli([a.format(**p) for a in TRAIN] + [
      "--model_dir={}".format(p["run_a"]), "--epochs=1", "--noexport",
      "--num_images=0"])
  assert result.returncode == 0, result.stderr[-2000:]
  p["run_a_files"] = snapshot(p["run_a"])
  # An export folder with a temp folder left by a killed export.
  p["stale_export"] = str(root / "stale_export")
  shutil.copytree(p["export"], p["stale_export"])
  os.makedirs(os.path.join(p["stale_export"], ".tmp-1-999999999"))
  return p


def _run_a_untouched(paths, result):
  del result
  assert snapshot(paths["run_a"]) == paths["run_a_files"]


def _no_stale_temp(paths, result):
  del result
  assert not [n for n in os.listdir(paths["stale_export"])
              if n.startswith(".tmp")]


def _report_labels_and_constant_amplitude(paths, result):
  del result
  with open(os.path.join(paths["root"], "report_po", "results.md")) as f:
    tables = f.read()
  assert "| DM (random start) |" in tables and "| DM (flat start) |" in tables
  mean_row = [l for l in tables.splitlines()
              if l.startswith("| Mean object (reference) |")][0]
  assert mean_row.split("|")[2].strip() == "n/a", mean_row
  assert "true amplitude is constant" in tables


TRAIN = ["-m", "ptychonet_tf.train", *GEOMETRY_FLAGS, "--base_channels=4",
         "--depth=2", "--batch_size=2", "--data_dir={data}",
         "--model_dir={root}/run"]
RECONSTRUCT = ["-m", "ptychonet_tf.reconstruct", "--out={root}/rec.npz"]
SIMULATE = ["-m", "ptychonet_tf.simulate", "--flagfile=configs/small_dense.flags"]
MAKE = ["tools/make_tfrecords.py", *GEOMETRY_FLAGS, "--num_train=2",
        "--num_test=1", "--num_shards=1", "--workers=1", "--noprogress"]

def _start_ceiling_noisy_lines(paths, result):
  """With --photons: the dose in the header, LSQML and its blurred rows
  before the truth's."""
  del paths
  assert "1000 photons per pattern" in result.stdout, result.stdout
  rows = [l for l in result.stdout.splitlines() if "amplitude" in l]
  assert len(rows) == 6, result.stdout
  assert "LSQML-3 (Poisson) " in rows[2], rows
  assert "LSQML-3 (Poisson) blurred, sigma 2 px" in rows[3], rows
  assert "truth blurred, sigma 2 px" in rows[4], rows


def _start_ceiling_lines(paths, result):
  """One line per start and per DM run, each with both PSNRs."""
  del paths
  rows = [l for l in result.stdout.splitlines() if "amplitude" in l]
  assert len(rows) == 5, result.stdout
  assert "DM-3 from flat" in rows[1] and "DM-5 from flat" in rows[2], rows
  assert "sigma 2 px" in rows[3] and "then DM-3" in rows[4], rows
  assert all("dB" in r and "phase" in r for r in rows), rows


CASES = [
    # Flags: bad choices, unknown flags, missing flagfiles, help.
    Case("flag outside its choices", TRAIN + ["--loss=foo"],
         phrase="--loss=foo: value should be one of "
                "<mse|dse|physics|mse+physics>"),
    Case("distribution outside its choices", TRAIN + ["--distribution=foo"],
         phrase="--distribution=foo: value should be one of"),
    Case("unknown flag", ["-m", "ptychonet_tf.export", "--modeldir=x"],
         phrase="Unknown command line flag 'modeldir'"),
    Case("missing flagfile", ["-m", "ptychonet_tf.export",
                              "--flagfile=configs/nope.flags"],
         phrase="Unable to open flagfile"),
    Case("--help exits 0", ["-m", "ptychonet_tf.train", "--help"], status=0),
    Case("several missing flags in one line", SIMULATE,
         phrase="--out, --phase_image and --amplitude_image are required"),
    Case("unexpected positional argument",
         ["-m", "ptychonet_tf.export", "--model_dir=x", "extra"],
         phrase="unexpected arguments"),
    # Experiment flagfiles name their folders; a missing dataset gets the
    # command that makes it.
    Case("dataset of a flagfile not made yet",
         ["-m", "ptychonet_tf.train", "--flagfile=configs/dense.flags",
          "--data_dir={root}/nope"],
         phrase="make it with: python tools/make_tfrecords.py "
                "--flagfile=configs/dense.flags --out_dir={root}/nope"),
    Case("evaluate on a dataset not made yet",
         ["-m", "ptychonet_tf.evaluate", "--flagfile=configs/small_dense.flags",
          "--data_dir={root}/nope", "--out_dir={root}/report"],
         phrase="make it with: python tools/make_tfrecords.py"),
    # Datasets.
    Case("geometry flag contradicting the dataset",
         TRAIN + ["--probe_size=32,32"], phrase="conflicts"),
    Case("truncated shard", ["tools/check_tfrecords.py",
                             "--data_dir={truncated}"],
         phrase="train-00000-of-00002.tfrecord is truncated"),
    Case("dataset dir holding another dataset",
         MAKE + ["--out_dir={data}", "--seed=5"],
         phrase="holds a dataset made with other settings"),
    Case("probe file of another size",
         MAKE + ["--out_dir={root}/o", "--probe_file={probe32}"],
         phrase="expected (16, 16)"),
    Case("scan outside the object",
         MAKE + ["--out_dir={root}/o", "--scan_margin=-40"],
         phrase="falls outside"),
    Case("image of 1x1 pixels",
         SIMULATE + ["--amplitude_image={image}", "--phase_image={tiny_png}",
                     "--out={root}/s.npz"],
         phrase="is 1x1 pixels"),
    Case("missing image", SIMULATE + ["--amplitude_image={root}/none.png",
                                      "--phase_image={image}",
                                      "--out={root}/s.npz"],
         phrase="does not exist"),
    Case("output folder is a file",
         MAKE + ["--out_dir={afile}"], phrase="is a file"),
    Case("output file inside a file",
         SIMULATE + ["--amplitude_image={image}", "--phase_image={image}",
                     "--out={afile}/s.npz"], phrase="is a file"),
    Case("image source that matches no image",
         MAKE + ["--out_dir={root}/o2", "--images={root}/none"],
         phrase="{root}/none"),
    Case("folder without a dataset", TRAIN[:-2] + ["--data_dir={empty}",
                                                   "--model_dir={root}/m1"],
         phrase="holds no dataset.json"),
    Case("dataset whose shards are gone",
         TRAIN[:-2] + ["--data_dir={no_shards}", "--model_dir={root}/m2"],
         phrase="train-00000-of-00002.tfrecord does not exist"),
    Case("evaluate into a file", ["-m", "ptychonet_tf.evaluate",
                                  "--data_dir={data}", "--out_dir={afile}"],
         phrase="is a file"),
    Case("dose that is not a number",
         ["-m", "ptychonet_tf.evaluate", "--data_dir={data}",
          "--out_dir={root}/r", "--photons=1e4,lots"],
         phrase="--photons value 'lots' is not a number"),
    Case("dose sweep on a noisy dataset",
         ["-m", "ptychonet_tf.evaluate", "--data_dir={noisy}",
          "--out_dir={root}/r", "--photons=1e3,inf"],
         phrase="was simulated with 10000 photons per pattern; a dose sweep "
                "redraws the noise of a noise-free dataset"),
    Case("measured scan file that does not exist",
         ["tools/make_tfrecords.py", "--scans={root}/none.npz",
          "--out_dir={root}/o4"],
         phrase="scan file {root}/none.npz does not exist"),
    Case("several doses for one dataset",
         MAKE + ["--out_dir={root}/o3", "--photons=1e3,1e4"],
         phrase="--photons=1e3,1e4: a dataset takes one dose"),
    Case("evaluate with a missing SavedModel",
         ["-m", "ptychonet_tf.evaluate", "--data_dir={data}",
          "--out_dir={root}/r", "--saved_model={root}/nope"],
         phrase="does not exist"),
    # Scan files.
    Case("text file named .npz", RECONSTRUCT + ["--scan={text_npz}"],
         phrase="is not an NPZ file (numpy.savez archive); it looks like text"),
    Case("PNG named .npz", RECONSTRUCT + ["--scan={png_npz}"],
         phrase="it looks like a PNG image"),
    Case("missing scan", RECONSTRUCT + ["--scan={root}/none.npz"],
         phrase="does not exist"),
    Case("no scan given", RECONSTRUCT, phrase="--scan is required"),
    Case("probe of another size than the patterns",
         RECONSTRUCT + ["--scan={scan_probe8}"], phrase="probe has shape (8, 8)"),
    Case("NaN amplitudes", RECONSTRUCT + ["--scan={scan_nan}"],
         phrase="NaN or infinite values (first in pattern 3)"),
    Case("negative amplitudes", RECONSTRUCT + ["--scan={scan_negative}"],
         phrase="negative values"),
    Case("layout outside the object", RECONSTRUCT + ["--scan={scan_outside}"],
         phrase="falls outside"),
    Case("HDF5 file without diffraction data",
         RECONSTRUCT + ["--scan={h5_no_data}"],
         phrase="holds no diffraction data"),
    Case("zero iterations", RECONSTRUCT + ["--scan={scan}", "--method=dm",
                                           "--iterations=0"],
         phrase="--iterations=0 must be >= 1 for --method=dm"),
    Case("LSQML regulariser out of range",
         RECONSTRUCT + ["--scan={scan}", "--method=lsqml", "--object_reg=0"],
         phrase="object_reg=0.0 and probe_reg=0.1 must be > 0"),
    Case("output is a directory", RECONSTRUCT[:-1] + ["--scan={scan}",
                                                      "--out={root}"],
         phrase="is a directory"),
    # SavedModels.
    Case("SavedModel trained with another probe",
         RECONSTRUCT + ["--scan={other_probe_scan}", "--method=ptychonet",
                        "--saved_model={export}"],
         phrase="was trained with another probe than the scan's"),
    Case("another probe, allowed", RECONSTRUCT + [
        "--scan={other_probe_scan}", "--method=ptychonet",
        "--saved_model={export}", "--allow_other_probe"],
         status=0, warning="was trained with another probe"),
    Case("the model's own probe", RECONSTRUCT + [
        "--scan={scan}", "--method=ptychonet", "--saved_model={export}"],
         status=0),
    Case("no SavedModel for a learned method",
         RECONSTRUCT + ["--scan={scan}", "--method=ptychonet"],
         phrase="--saved_model is required"),
    Case("SavedModel folder without a model",
         RECONSTRUCT + ["--scan={scan}", "--method=ptychonet",
                        "--saved_model={root}"],
         phrase="holds no saved_model.pb"),
    # Damaged datasets: a flipped byte inside a record's payload.
    Case("corrupt shard in training",
         TRAIN + ["--data_dir={damaged}", "--model_dir={root}/run_damaged",
                  "--epochs=1", "--noexport"],
         phrase="TFRecord shard {damaged}/train-00000-of-00002.tfrecord is "
                "corrupt: record 0 fails its checksum; run python "
                "tools/check_tfrecords.py --data_dir={damaged} --parse"),
    Case("corrupt shard in evaluation",
         ["-m", "ptychonet_tf.evaluate", "--data_dir={damaged_test}",
          "--out_dir={root}/report_damaged", "--dm_iterations=2"],
         phrase="TFRecord shard {damaged_test}/test-00000-of-00002.tfrecord "
                "is corrupt: record 0 fails its checksum"),
    Case("corrupt shard found by the checker",
         ["tools/check_tfrecords.py", "--data_dir={damaged}", "--parse"],
         phrase="train-00000-of-00002.tfrecord is corrupt: record 0 fails "
                "its checksum; re-run tools/make_tfrecords.py"),
    # Run directories: another dataset or network is refused, writing nothing.
    Case("model_dir of another dataset",
         TRAIN + ["--data_dir={data6}", "--model_dir={run_a}", "--epochs=1",
                  "--noexport"],
         phrase="model_dir {run_a} holds a run on another dataset",
         check=_run_a_untouched),
    Case("model_dir of other network settings",
         TRAIN + ["--model_dir={run_a}", "--base_channels=8", "--epochs=1",
                  "--noexport"],
         phrase="was trained with other network settings (base_channels: 4 "
                "there, 8 here)", check=_run_a_untouched),
    Case("fine-tuning on patterns of another size",
         ["-m", "ptychonet_tf.train", "--base_channels=4", "--depth=2",
          "--batch_size=2", "--data_dir={wide}", "--model_dir={run_a}",
          "--fine_tune", "--epochs=1", "--noexport"],
         phrase="was trained on 16x16 patterns, {wide} has 32x32",
         check=_run_a_untouched),
    # Exports: temp folders of killed exports are removed by the next one.
    Case("temp folder of a killed export",
         TRAIN + ["--model_dir={root}/run_export", "--epochs=1",
                  "--steps_per_epoch=1", "--eval_scans=1", "--num_images=0",
                  "--export_dir={stale_export}"],
         status=0, check=_no_stale_temp),
    # Reports.
    Case("report of phase-only objects (constant true amplitude)",
         ["-m", "ptychonet_tf.evaluate", "--data_dir={phase_only}",
          "--out_dir={root}/report_po", "--dm_iterations=2",
          "--curve_every=1"],
         status=0, check=_report_labels_and_constant_amplitude),
    Case("model_dir of other refinement steps",
         TRAIN + ["--model_dir={run_a}", "--refine_steps=3", "--epochs=1",
                  "--noexport"],
         phrase="was trained with other network settings (refine_steps: 0 "
                "there, 3 here)", check=_run_a_untouched),
    Case("negative refinement steps",
         TRAIN + ["--model_dir={root}/run_neg", "--refine_steps=-1"],
         phrase="refine_steps=-1 and refine_filters=0 must be >= 0"),
    Case("an even refinement smoothing filter",
         TRAIN + ["--model_dir={root}/run_even", "--refine_steps=2",
                  "--refine_smoothing=4"],
         phrase="refine_smoothing=4 must be 0 (none) or an odd filter size"),
    Case("keeping more refinement steps than the model has",
         ["-m", "ptychonet_tf.export", "--model_dir={run_a}",
          "--export_dir={root}/e_keep", "--keep_refine_steps=2"],
         phrase="--keep_refine_steps=2 must be in [0, 0], the refinement "
                "steps of the run in {run_a}", check=_run_a_untouched),
    Case("run directory without a trained model",
         ["-m", "ptychonet_tf.export", "--model_dir={root}",
          "--export_dir={root}/e"], phrase="holds no trained model"),
    # tools/start_ceiling.py: a tiny run, and a blur that is not a number.
    Case("start ceiling on a tiny dataset",
         ["tools/start_ceiling.py", "--data_dir={data}", "--scans=2",
          "--iterations=3,5", "--blur=2", "--blur_iterations=3"],
         status=0, check=_start_ceiling_lines),
    Case("start ceiling on noisy scans",
         ["tools/start_ceiling.py", "--data_dir={data}", "--scans=2",
          "--iterations=3", "--blur=2", "--blur_iterations=3",
          "--photons=1e3", "--lsqml_iterations=3"],
         status=0, check=_start_ceiling_noisy_lines),
    Case("start ceiling at a dose that is not a number",
         ["tools/start_ceiling.py", "--data_dir={data}", "--photons=lots"],
         phrase="--photons value 'lots' is not a number"),
    Case("start ceiling with a blur that is not a number",
         ["tools/start_ceiling.py", "--data_dir={data}", "--blur=2,x"],
         phrase="--blur=2,x is not a list of numbers"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(paths, case):
  args = [a.format(**paths) for a in case.args]
  result = run_cli(args)
  assert result.returncode == case.status, (result.returncode,
                                            result.stderr[-2000:])
  assert "Traceback" not in result.stderr, result.stderr
  lines = [l for l in result.stderr.strip().splitlines() if l.strip()]
  if case.status == 2:
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert case.phrase.format(**paths) in lines[-1], lines[-1]
    assert len(lines[-1]) < 400, lines[-1]
  if case.warning:
    warnings = [l for l in lines if l.startswith("warning: ")]
    assert len(warnings) == 1 and case.warning in warnings[0], result.stderr
  if case.check is not None:
    case.check(paths, result)
