"""The single list of bad inputs and faults we know of, and what each gets.

Two tables:

- `CASES` (slow tier): every row runs one command as a user would type it
  (`python ARGS` from the repository root, by `run_cli`: a fork of a process
  that has imported TensorFlow, or a fresh interpreter under `make
  test-release`) on files the fixture makes, and
  checks its exit status and, for refusals, that stderr ends in one line
  `error: ...` holding the expected phrase, with no traceback; rows that may
  go on check for a one-line `warning: ...` instead. Rows of hostile files,
  resource bombs and full disks run under a 6 GB address-space limit
  (RLIMIT_AS, as `prlimit --as=6000000000`) and, for full disks, a file-size
  limit (a write past it fails with EFBIG, as on a full disk).
- `LIBRARY_CASES` (fast tier): the library check behind a row, called
  in-process on a file the row makes (one UserError holding the phrase).

README.md's "Errors" section summarises the classes.
"""
import dataclasses
import json
import os
import resource
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from http import server as http_server
from typing import Callable, Optional, Sequence

import h5py
import numpy as np
import pytest
from PIL import Image

from helpers import GEOMETRY_FLAGS, REPO, run_cli, snapshot, write_tiny

from ptychonet_tf.utils.errors import UserError

ADDRESS_SPACE = 6_000_000_000  # the acceptance limit (bytes)


@dataclasses.dataclass(frozen=True)
class Case:
  """One row: `python ARGS` (ARGS formatted with the fixture's paths)."""
  name: str
  args: Sequence[str]
  status: int = 2
  phrase: str = ""
  warning: str = ""
  check: Optional[Callable] = None  # check(paths, result) after the run
  limited: bool = False  # run under ADDRESS_SPACE (prlimit --as)
  file_size: Optional[int] = None  # a file-size limit (a full disk)
  env: Optional[dict] = None  # extra environment variables
  # Release checks only (`make test-release`): a command-line row whose
  # check a fast in-process row (LIBRARY_CASES) already makes.
  release: bool = False


# --- Hostile files (issue 25): each maker writes one file under a folder and
# returns its path; the fast rows and the slow rows use the same makers.


def _scan_arrays(**change):
  """The arrays of a small valid scan file (3x3 positions, 16x16), changed."""
  from ptychonet_tf.physics import layouts  # pylint: disable=g-import-not-at-top
  layout, shape = layouts.layout_from_positions(layouts.mesh(3, 3, 5), (16, 16))
  rng = np.random.default_rng(0)
  arrays = dict(amplitudes=rng.random((9, 16, 16)).astype(np.float32),
                layout=layout, probe=np.ones((16, 16), np.complex64),
                object_shape=np.asarray(shape, np.int32))
  arrays.update(change)
  return {k: v for k, v in arrays.items() if v is not None}


def _npz(name, **arrays):
  def make(folder):
    path = os.path.join(folder, name)
    np.savez(path, **arrays)
    return path
  return make


def _scan_npz(name, **change):
  def make(folder):
    return _npz(name, **_scan_arrays(**change))(folder)
  return make


def _tike_npz(name, **change):
  rng = np.random.default_rng(0)
  arrays = dict(data=rng.random((9, 16, 16)).astype(np.float32) * 100,
                scan=np.stack(np.meshgrid(np.arange(3) * 5.0,
                                          np.arange(3) * 5.0), -1).reshape(9, 2),
                probe=np.ones((16, 16), np.complex64))
  arrays.update(change)

  def make(folder):
    return _npz(name, **{k: v for k, v in arrays.items() if v is not None})(
        folder)
  return make


def _npy_header(shape, descr="<f4"):
  header = repr({"descr": descr, "fortran_order": False,
                 "shape": tuple(shape)}).encode()
  header += b" " * (-(len(header) + 11) % 64) + b"\n"
  return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def _npz_declaring_6tib(folder):
  """An .npz of 1 KB whose amplitudes header declares 100000x4096x4096 float32."""
  path = os.path.join(folder, "6tib.npz")
  arrays = _scan_arrays()
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("amplitudes.npy", _npy_header((100000, 4096, 4096)) + bytes(64))
    for key in ("layout", "probe", "object_shape"):
      with z.open(key + ".npy", "w") as f:
        np.lib.format.write_array(f, arrays[key])
  return path


def _cxi(name, data=None, translations=None, declared=None):
  """A CXI file; `declared`: a data shape declared but never written."""
  def make(folder):
    path = os.path.join(folder, name)
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
      if declared is not None:
        f.create_dataset("entry_1/data_1/data", shape=declared, dtype="f4",
                         chunks=(1, 64, 64))
      else:
        f["entry_1/data_1/data"] = (rng.random((9, 16, 16)) * 100
                                    if data is None else data)
      f["entry_1/data_1/translation"] = (
          np.stack(np.meshgrid(np.arange(3), np.arange(3)), -1).reshape(9, 2)
          * 5e-7 if translations is None else translations)
    return path
  return make


def _stray_translations():
  t = np.stack(np.meshgrid(np.arange(3), np.arange(3)), -1).reshape(9, 2) * 5e-7
  t = np.pad(t, ((0, 0), (0, 1))).astype(np.float64)
  t[4, 0] = 1.0  # one position 1 m away
  return t


def _png_declaring(width, height):
  """A PNG whose header declares width x height (one pixel of data follows):
  what PIL's size check and ours see before decoding."""
  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data +
            struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

  def make(folder):
    path = os.path.join(folder, f"png_{width}x{height}.png")
    with open(path, "wb") as f:
      f.write(b"\x89PNG\r\n\x1a\n" +
              chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0,
                                         0, 0)) +
              chunk(b"IDAT", zlib.compress(b"\0\0")) + chunk(b"IEND", b""))
    return path
  return make


def _record_of_length(length, gzipped=False):
  """A TFRecord shard whose first length field (with a valid CRC) says
  `length` bytes, followed by a few bytes."""
  def make(folder):
    from ptychonet_tf.data import records  # pylint: disable=g-import-not-at-top
    import gzip  # pylint: disable=g-import-not-at-top
    head = struct.pack("<Q", length)
    data = head + struct.pack("<I", records.masked_crc32c(head)) + bytes(100)
    path = os.path.join(folder, f"long-{length}{'-gzip' if gzipped else ''}"
                        f".tfrecord")
    with (gzip.open if gzipped else open)(path, "wb") as f:
      f.write(data)
    return path
  return make


def _dataset_json(name, shards):
  """A dataset folder whose dataset.json lists `shards` as train shards."""
  def make(folder):
    from ptychonet_tf.data import schema  # pylint: disable=g-import-not-at-top
    path = os.path.join(folder, name)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "dataset.json"), "w") as f:
      json.dump({"schema_version": schema.SCHEMA_VERSION, "complete": True,
                 "counts": {"train": 1, "test": 0},
                 "shards": {"train": shards, "test": []},
                 "amplitude_dtype": "float32", "compression": "none"}, f)
    return path
  return make


def _tfds_dir(template):
  def make(folder):
    path = os.path.join(folder, "tfds_elsewhere")
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "dataset_info.json"), "w") as f:
      json.dump({"name": "x", "splits": [{"name": "train",
                                          "filepathTemplate": template}]}, f)
    return path
  return make


def _run_dir(folder):
  path = os.path.join(folder, "a_run")
  os.makedirs(path, exist_ok=True)
  for name in ("run.json", "model.json"):
    with open(os.path.join(path, name), "w") as f:
      f.write("{}")
  return path


HOSTILE_FILES = {
    "cxi_huge": _cxi("huge.cxi", declared=(100000, 2048, 2048)),
    "npz_6tib": _npz_declaring_6tib,
    "scan_huge_object": _scan_npz("huge_object.npz",
                                  object_shape=np.array([200000, 200000])),
    "cxi_stray": _cxi("stray.cxi", translations=_stray_translations()),
    "png_bomb": _png_declaring(50000, 50000),
    "png_12k": _png_declaring(12000, 12000),
    "scan_string": _scan_npz("string.npz", amplitudes=np.full((9, 16, 16),
                                                              "1.0")),
    "scan_complex": _scan_npz("complex.npz", amplitudes=np.ones(
        (9, 16, 16), np.complex64) * (1 + 1j)),
    "scan_shape3": _scan_npz("shape3.npz", object_shape=np.array([30, 30, 3])),
    "tike_scalar_scan": _tike_npz("tike_scalar.npz", scan=np.float64(3.0)),
    "tike_overflow": _tike_npz("tike_overflow.npz", scan=np.array(
        [[0.0, 0.0]] * 8 + [[1e12, 1e12]])),
    "scan_zero": _scan_npz("zero.npz", amplitudes=np.zeros((9, 16, 16),
                                                           np.float32)),
    "tike_zero": _tike_npz("tike_zero.npz", data=np.zeros((9, 16, 16))),
    "cxi_zero": _cxi("zero.cxi", data=np.zeros((9, 16, 16))),
    "record_2e40": _record_of_length(2**40),
    "record_2e40_gzip": _record_of_length(2**40, gzipped=True),
    "dataset_outside": _dataset_json("outside", ["../outside/x.tfrecord"]),
    "dataset_absolute": _dataset_json("absolute", ["/etc/x.tfrecord"]),
    "tfds_elsewhere": _tfds_dir("../elsewhere/{SPLIT}.tfrecord"),
    "a_run": _run_dir,
    "scan_ok": _scan_npz("scan_ok.npz"),
}


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
  # Hostile files (issue 25), made by the same functions as the fast rows.
  for key, make in HOSTILE_FILES.items():
    p[key] = make(str(root))
  # A SavedModel whose variables are cut short.
  p["truncated_export"] = str(root / "truncated_export")
  shutil.copytree(p["export"], p["truncated_export"])
  for folder, _, names in os.walk(p["truncated_export"]):
    for name in names:
      if name.startswith("variables.data"):
        path = os.path.join(folder, name)
        with open(path, "r+b") as f:
          f.truncate(os.path.getsize(path) // 2)
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
    # Issue 25, class 1: sizes a file or a flag declares, checked before
    # allocation (under a 6 GB address-space limit).
    Case("CXI file declaring 100000x2048x2048 patterns",
         RECONSTRUCT + ["--scan={cxi_huge}"], limited=True,
         phrase="entry_1/data_1/data is 100000x2048x2048 float32 (1.5 TiB)"),
    Case("50000x50000 PNG (a decompression bomb)",
         SIMULATE + ["--amplitude_image={png_bomb}", "--phase_image={image}",
                     "--out={root}/s.npz"], limited=True,
         phrase="png_50000x50000.png is 50000x50000 pixels (2500 Mpixel)"),
    Case("--probe_size=100000,100000",
         MAKE + ["--out_dir={root}/o5", "--probe_size=100000,100000"],
         limited=True, phrase="--probe_size=100000,100000 must be two sizes "
                              "in [1, 4096] pixels", release=True),
    # Class 2: values out of range.
    Case("--photons=1e300 for a dose sweep",
         ["-m", "ptychonet_tf.evaluate", "--data_dir={data}",
          "--out_dir={root}/r_dose", "--photons=1e3,1e300"], limited=True,
         phrase="--photons value 1e+300 must be in [0, 1e+15]", release=True),
    Case("evaluate --region_fraction=2",
         ["-m", "ptychonet_tf.evaluate", "--data_dir={data}",
          "--out_dir={root}/r", "--region_fraction=2"],
         phrase="flag --region_fraction=2.0: must be in (0, 1]", release=True),
    Case("SavedModel with truncated variables (TensorFlow's logs on)",
         RECONSTRUCT + ["--scan={scan}", "--method=ptychonet",
                        "--saved_model={truncated_export}"], limited=True,
         env={"TF_CPP_MIN_LOG_LEVEL": "0"}, phrase="cannot be loaded",
         release=True),
    # Class 4: full disks (a file-size limit: writes past it fail with EFBIG).
    Case("full disk under make_tfrecords",
         MAKE + ["--out_dir={root}/full_data"], file_size=8000, limited=True,
         phrase="cannot write {root}/full_data/train-00000-of-00001.tfrecord: "
                "file too large", check=lambda p, r: _no_temp(p["root"] +
                                                              "/full_data")),
    Case("full disk under export",
         ["-m", "ptychonet_tf.export", "--model_dir={run_a}",
          "--export_dir={root}/full_export"], file_size=20000, limited=True,
         phrase="cannot write {root}/full_export", check=_run_a_untouched,
         release=True),
    Case("full disk under reconstruct (found before computing)",
         RECONSTRUCT[:-1] + ["--scan={scan}", "--out={root}/rec_full.npz"],
         file_size=1000, limited=True,
         phrase="cannot write {root}/rec_full.npz: File too large",
         check=lambda p, r: _no_file(p["root"] + "/rec_full.npz"),
         release=True),
    # Class 6: folders that hold something else.
    Case("make_tfrecords into a training run's folder",
         MAKE + ["--out_dir={run_a}"], limited=True,
         phrase="output folder {run_a} holds a training run",
         check=_run_a_untouched),
]


def _no_file(path):
  assert not os.path.exists(path), path


def _no_temp(folder):
  """Nothing half-written is left under folder (temp names)."""
  left = [n for _, _, names in os.walk(folder) for n in names
          if n.endswith(".tmp") or ".tmp-" in n]
  assert not left, left


def _run(args, case):
  """`python ARGS` as run_cli does, under the row's limits and environment."""
  limits = {}
  if case.limited:
    limits["as"] = ADDRESS_SPACE
  if case.file_size:
    limits["fsize"] = case.file_size
  return run_cli(args, limits=limits, env=case.env)


@pytest.mark.slow
@pytest.mark.parametrize("case", [
    pytest.param(c, marks=[pytest.mark.release] if c.release else [])
    for c in CASES], ids=[c.name for c in CASES])
def test_bad_input(paths, case):
  args = [a.format(**paths) for a in case.args]
  result = _run(args, case)
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


# --- Fast tier: the library check behind each example of issue 25 ---------


def _read_scan(path, **kwargs):
  from ptychonet_tf.data import readers  # pylint: disable=g-import-not-at-top
  return readers.read_scan(path, **kwargs)


def _read_image(path):
  from ptychonet_tf.data import images  # pylint: disable=g-import-not-at-top
  return images.read_image_file(path)


def _count_records(path, compression="none"):
  from ptychonet_tf.data import records  # pylint: disable=g-import-not-at-top
  return records.count_records(path, compression, verify_data=True)


def _load_dataset_info(path):
  from ptychonet_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.load_dataset_info(path)


def _tfds_templates(path):
  from ptychonet_tf.data import images  # pylint: disable=g-import-not-at-top
  return images.check_tfds_templates(path)


def _not_a_run(path):
  from ptychonet_tf.data import writer  # pylint: disable=g-import-not-at-top
  return writer.check_not_a_run(path)


def _simulation(photons=0.0, **scan):
  """writer.check_simulation of a simulation config; `size`: --probe_size."""
  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.data import writer
  from ptychonet_tf.physics import geometry as geometry_lib
  from ptychonet_tf.physics import simulator
  # pylint: enable=g-import-not-at-top
  size = scan.pop("size", (16, 16))
  config = simulator.SimulationConfig(
      geometry=geometry_lib.GeometryConfig(
          probe=geometry_lib.ProbeConfig(size=size),
          scan=geometry_lib.ScanConfig(**scan)), photons=photons)
  return lambda _: writer.check_simulation(config)


def _with_file_size_limit(write):
  """write(path) under a 1000-byte file-size limit (a full disk)."""
  def call(path):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))
    try:
      write(os.path.join(path, "out.npz"))
    finally:
      resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
  return call


def _write_big_text(path):
  from ptychonet_tf.utils import files  # pylint: disable=g-import-not-at-top
  files.write_text(path, "x" * 100000)


def _check_writable(path):
  from ptychonet_tf.utils import files  # pylint: disable=g-import-not-at-top
  files.check_writable(path, "--out")


@dataclasses.dataclass(frozen=True)
class LibraryCase:
  """call(path) raises one UserError holding `phrase`; path is the file of
  HOSTILE_FILES[key] (or a fresh folder when key is None)."""
  name: str
  key: Optional[str]
  call: Callable
  phrase: str


LIBRARY_CASES = [
    # 1. Sizes declared by a file or a flag.
    LibraryCase("CXI declaring 100000x2048x2048 patterns", "cxi_huge",
                _read_scan, "is 100000x2048x2048 float32 (1.5 TiB); more than "
                            "this process can hold"),
    LibraryCase(".npz header declaring 6 TiB", "npz_6tib", _read_scan,
                "declares 100000x4096x4096 float32 (6.1 TiB) but holds"),
    LibraryCase("object_shape 200000x200000", "scan_huge_object", _read_scan,
                "the object is 200000x200000 pixels"),
    LibraryCase("CXI position 1 m away", "cxi_stray",
                lambda p: _read_scan(p, pixel_size=1e-7),
                "the positions span 10 x 10000000 pixels"),
    LibraryCase("--probe_size=100000,100000", None,
                _simulation(size=(100000, 100000)),
                "--probe_size=100000,100000 must be two sizes in [1, 4096]"),
    LibraryCase("--scan_count=2000000000", None,
                _simulation(count=2_000_000_000),
                "--scan_count=2000000000 must be in [1, 100000]"),
    LibraryCase("--scan_step=1e9", None, _simulation(step=1e9),
                "--scan_step=1000000000.0 must be in (0, 4096]"),
    LibraryCase("50000x50000 PNG", "png_bomb", _read_image,
                "is 50000x50000 pixels (2500 Mpixel); at most 67 Mpixel"),
    LibraryCase("12000x12000 PNG under PIL's limit", "png_12k", _read_image,
                "is 12000x12000 pixels (144 Mpixel); at most 67 Mpixel"),
    # 2. Values that are not what they say.
    LibraryCase("string amplitudes", "scan_string", _read_scan,
                "amplitudes has dtype <U3; expected numbers"),
    LibraryCase("complex amplitudes", "scan_complex", _read_scan,
                "complex values are not amplitudes"),
    LibraryCase("3-element object_shape", "scan_shape3", _read_scan,
                "object_shape is [30, 30, 3]; expected two positive integers"),
    LibraryCase("scalar tike scan", "tike_scalar_scan", _read_scan,
                "scan has shape (); expected [..., N, 2]"),
    LibraryCase("tike positions beyond int32", "tike_overflow", _read_scan,
                "the positions span 1000000000000 x 1000000000000 pixels"),
    LibraryCase("all-zero patterns (scan file)", "scan_zero", _read_scan,
                "amplitudes are all zero"),
    LibraryCase("all-zero patterns (tike)", "tike_zero", _read_scan,
                "diffraction data are all zero"),
    LibraryCase("all-zero patterns (CXI)", "cxi_zero",
                lambda p: _read_scan(p, pixel_size=1e-7),
                "diffraction data are all zero"),
    LibraryCase("--photons=1e300", None, _simulation(photons=1e300),
                "--photons value 1e+300 must be in [0, 1e+15]"),
    LibraryCase("record length field of 2^40 (valid CRC)", "record_2e40",
                _count_records, "is truncated inside record 0 (its length "
                                "field says 1099511627776 bytes, 100 are left)"),
    LibraryCase("record length field of 2^40 (gzip)", "record_2e40_gzip",
                lambda p: _count_records(p, "gzip"),
                "record 0 says it is 1.0 TiB long"),
    # 4. Full disks (a file-size limit fails writes with EFBIG).
    LibraryCase("full disk at write time", None,
                _with_file_size_limit(_write_big_text),
                "out.npz: File too large"),
    LibraryCase("full disk before computing", None,
                _with_file_size_limit(_check_writable),
                "cannot write"),
    # 6. Folders that hold something else.
    LibraryCase("dataset into a training run", "a_run", _not_a_run,
                "holds a training run (run.json), not a dataset"),
    LibraryCase("shard name ../outside/x.tfrecord", "dataset_outside",
                _load_dataset_info, "'../outside/x.tfrecord' points outside "
                                    "the dataset folder"),
    LibraryCase("absolute shard name", "dataset_absolute", _load_dataset_info,
                "'/etc/x.tfrecord' points outside the dataset folder"),
    LibraryCase("tfds filepathTemplate ../elsewhere", "tfds_elsewhere",
                _tfds_templates, "'../elsewhere/{SPLIT}.tfrecord' points "
                                 "outside the dataset folder"),
]


@pytest.mark.parametrize("case", LIBRARY_CASES,
                         ids=[c.name for c in LIBRARY_CASES])
def test_library_refuses(tmp_path, case):
  path = HOSTILE_FILES[case.key](str(tmp_path)) if case.key else str(tmp_path)
  with pytest.raises(UserError) as e:
    case.call(path)
  message = str(e.value)
  assert case.phrase in message, message
  assert "\n" not in message and len(message) < 400, message


def test_measured_dataset_with_a_deleted_shard_is_rewritten(tmp_path):
  """A measured dataset is 'already complete, kept' only with every shard."""
  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.data import measured
  from ptychonet_tf.data import scanfile
  # pylint: enable=g-import-not-at-top
  arrays = _scan_arrays()
  scan = scanfile.Scan(amplitudes=arrays["amplitudes"],
                       layout=arrays["layout"], probe=arrays["probe"],
                       object_shape=tuple(arrays["object_shape"]))
  config = measured.MeasuredConfig(files=("a.npz",), sha256=("0" * 64,))
  out = str(tmp_path / "m")
  assert not measured.write_measured_dataset([scan], scan.probe, out,
                                             config)["kept"]
  assert measured.write_measured_dataset([scan], scan.probe, out,
                                         config)["kept"]
  shard = os.path.join(out, "train-00000-of-00001.tfrecord")
  before = open(shard, "rb").read()
  os.remove(shard)
  assert not measured.write_measured_dataset([scan], scan.probe, out,
                                             config)["kept"]
  assert open(shard, "rb").read() == before


# --- Fast tier: the serving client against a server that lies --------------


class _Server(http_server.ThreadingHTTPServer):
  """Answers every POST with `self.body` (bytes) and counts the requests."""
  body = b"{}"
  requests = 0


class _Handler(http_server.BaseHTTPRequestHandler):

  def do_POST(self):  # pylint: disable=invalid-name
    self.server.requests += 1
    self.rfile.read(int(self.headers.get("Content-Length", 0)))
    self.send_response(200)
    self.send_header("Content-Type", "application/json")
    self.send_header("Content-Length", str(len(self.server.body)))
    self.end_headers()
    try:
      self.wfile.write(self.server.body)
    except (BrokenPipeError, ConnectionResetError):
      pass  # the client stopped reading at its cap

  def log_message(self, *args):  # quiet
    del args


@pytest.fixture(scope="module")
def server():
  srv = _Server(("127.0.0.1", 0), _Handler)
  thread = threading.Thread(target=srv.serve_forever, daemon=True)
  thread.start()
  yield srv
  srv.shutdown()
  srv.server_close()


def _client(args):
  return subprocess.run([sys.executable, "tools/serving_client.py", *args],
                        cwd=REPO, capture_output=True, text=True, timeout=120)


def _outputs(shape, value=0.5):
  a = np.full(shape, value).tolist()
  return json.dumps({"outputs": {"amplitude": a, "phase": a}}).encode()


def _nested(depth):
  return (b'{"outputs": {"amplitude": ' + b"[" * depth + b"1" + b"]" * depth +
          b', "phase": 1}}')


SERVING_CASES = [
    ("a list body", b"[1, 2, 3]", "answered a JSON list"),
    ("ragged outputs",
     b'{"outputs": {"amplitude": [[1, 2], [3]], "phase": [[1, 2], [3]]}}',
     "amplitude is not an array of numbers"),
    ("string outputs", b'{"outputs": {"amplitude": "abc", "phase": "abc"}}',
     "amplitude is not an array of numbers"),
    ("a deeply nested body", _nested(30000), "did not answer JSON"),
    ("outputs of another shape", _outputs((1, 30, 30)),
     "amplitude has shape [1, 30, 30]; expected [1, 26, 26]"),
    ("NaN outputs",
     _outputs((1, 26, 26)).replace(b"0.5", b"NaN"),
     "amplitude holds NaN or infinite values"),
    ("a body larger than the request can need", b" " * 400_000 + b"{}",
     "answered more than"),
]


@pytest.mark.parametrize("body,phrase", [c[1:] for c in SERVING_CASES],
                         ids=[c[0] for c in SERVING_CASES])
def test_serving_client_refuses_a_bad_response(tmp_path, server, body, phrase):
  scan = HOSTILE_FILES["scan_ok"](str(tmp_path))
  server.body = body
  out = tmp_path / "rec.npz"
  result = _client([scan, f"--url=http://127.0.0.1:{server.server_port}/p",
                    f"--out={out}"])
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert "Traceback" not in result.stderr and lines[-1].startswith("error: ")
  assert phrase in lines[-1], lines[-1]
  assert sorted(os.listdir(tmp_path)) == ["scan_ok.npz"]  # nothing left


def test_serving_client_saves_a_good_response(tmp_path, server):
  scan = HOSTILE_FILES["scan_ok"](str(tmp_path))
  server.body = _outputs((1, 26, 26))
  out = tmp_path / "rec.npz"
  result = _client([scan, f"--url=http://127.0.0.1:{server.server_port}/p",
                    f"--out={out}"])
  assert result.returncode == 0, result.stderr
  with np.load(out) as f:
    assert f["amplitude"].shape == (1, 26, 26)
  assert sorted(os.listdir(tmp_path)) == ["rec.npz", "scan_ok.npz"]


def test_serving_client_any_scan_sends_positions_and_probe(tmp_path, server):
  """--signature=any_scan: positions and probe planes in the request; the
  answer covers the scanned rectangle and is saved placed in the scan's
  object (here with 2 unscanned pixels above and left of it)."""
  arrays = _scan_arrays()
  arrays["layout"] = arrays["layout"] + np.array([2, 2, 2, 2], np.int32)
  arrays["object_shape"] = np.array([28, 28], np.int32)
  arrays["probe"] = (arrays["probe"] * (1 + 0.5j)).astype(np.complex64)
  scan = _npz("scan_ok.npz", **arrays)(str(tmp_path))
  result = _client([scan, "--signature=any_scan"])
  assert result.returncode == 0, result.stderr
  request = json.loads(result.stdout)
  assert request["signature_name"] == "any_scan"
  inputs = request["inputs"]
  np.testing.assert_array_equal(np.asarray(inputs["positions"])[0],
                                arrays["layout"][:, [0, 2]])
  np.testing.assert_array_equal(np.asarray(inputs["probe"])[..., 1], 0.5)
  assert np.asarray(inputs["amplitudes"]).shape == (1, 9, 16, 16)
  server.body = _outputs((1, 26, 26))
  out = tmp_path / "rec.npz"
  result = _client([scan, "--signature=any_scan", f"--out={out}",
                    f"--url=http://127.0.0.1:{server.server_port}/p"])
  assert result.returncode == 0, result.stderr
  with np.load(out) as f:
    assert f["amplitude"].shape == (1, 28, 28)
    assert np.all(f["amplitude"][0, 2:, 2:] == 0.5)
    assert not f["amplitude"][0, :2].any() and not f["phase"][0, :, :2].any()
  result = _client([scan, scan, "--signature=any_scan"])
  assert result.returncode == 2 and "one scan per request" in result.stderr
  # --passes: the any_scan_passes signature, with the count as an input.
  result = _client([scan, "--signature=any_scan", "--passes=3"])
  assert result.returncode == 0, result.stderr
  request = json.loads(result.stdout)
  assert request["signature_name"] == "any_scan_passes"
  assert request["inputs"]["passes"] == 3
  for args, phrase in ((["--signature=any_scan", "--passes=0"],
                        "--passes=0 must be >= 1"),
                       (["--passes=2"], "--passes applies to "
                        "--signature=any_scan, not serving_default")):
    result = _client([scan, *args])
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert phrase in result.stderr.strip().splitlines()[-1], result.stderr
  # A scan file without the probe any_scan sends, or with a ragged layout.
  for name, change, phrase in (
      ("noprobe.npz", dict(probe=None), "has no 'probe' array"),
      ("badlayout.npz", dict(layout=arrays["layout"][:3]),
       "expected integer rows (top, bottom, left, right)")):
    bad = _npz(name, **{k: v for k, v in dict(arrays, **change).items()
                        if v is not None})(str(tmp_path))
    result = _client([bad, "--signature=any_scan"])
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert phrase in lines[-1], lines[-1]


@pytest.mark.parametrize("args,phrase", [
    (["--url=file:///etc/passwd"], "is not an http:// or https:// URL"),
    (["--url=http://127.0.0.1:{port}/p", "--out={tmp}"], "is a directory"),
], ids=["file:// URL", "--out is a folder"])
def test_serving_client_refuses_before_the_request(tmp_path, server, args,
                                                   phrase):
  scan = HOSTILE_FILES["scan_ok"](str(tmp_path))
  before = server.requests
  result = _client([scan] + [a.format(port=server.server_port, tmp=tmp_path)
                             for a in args])
  assert result.returncode == 2 and phrase in result.stderr.splitlines()[-1], (
      result.stderr)
  assert server.requests == before
  assert sorted(os.listdir(tmp_path)) == ["scan_ok.npz"]


# --- Slow tier: concurrent make_tfrecords on one folder --------------------


@pytest.mark.slow
def test_a_second_make_tfrecords_is_refused_while_the_first_finishes(tmp_path):
  """The first job is paused (SIGSTOP) while it holds the lock, so that the
  second surely tries the lock while the first runs; then it goes on."""
  from ptychonet_tf.utils import locks  # pylint: disable=g-import-not-at-top
  out = str(tmp_path / "data")
  make = MAKE[:1] + GEOMETRY_FLAGS + ["--num_train=30", "--num_test=1",
                                     "--num_shards=2", "--workers=1",
                                     "--noprogress", f"--out_dir={out}"]
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
  first = subprocess.Popen([sys.executable, *make, "--seed=0"], cwd=REPO,
                           env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 120
    while (locks.holder(out) or (None,))[0] != first.pid:
      assert first.poll() is None and time.time() < deadline, (
          first.communicate())
      time.sleep(0.05)
    os.kill(first.pid, signal.SIGSTOP)
    try:
      assert first.poll() is None  # paused while it holds the lock
      second = run_cli(make + ["--seed=1"])
    finally:
      os.kill(first.pid, signal.SIGCONT)
    assert second.returncode == 2, second.stderr
    assert second.stderr.strip().splitlines()[-1] == (
        f"error: {out} is in use by make_tfrecords (PID {first.pid}); wait "
        f"for it to finish, or use another folder")
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
  finally:
    if first.poll() is None:
      first.kill()
      first.communicate()
  with open(os.path.join(out, "dataset.json")) as f:
    assert json.load(f)["seed"] == 0
  # What tools/check_tfrecords.py --parse checks, in-process: every shard
  # complete, every record one of this dataset's scans.
  from ptychonet_tf.data import pipeline  # pylint: disable=g-import-not-at-top
  info = pipeline.load_dataset_info(out)
  for split in ("train", "test"):
    pipeline.verify_shards(info, split)
    assert pipeline.find_damaged_record(info, split, parse=True) is None
