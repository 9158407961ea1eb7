r"""Reconstructs one ptychographic scan: DM, ePIE, LSQML, PtychoNet (+ DM).

  python -m ptychonet_tf.reconstruct --scan=scan.npz --method=dm \
      [--iterations=300] [--out=rec.npz] [--png]
  python -m ptychonet_tf.reconstruct --scan=scan.npz --method=lsqml \
      [--iterations=300] [--lsqml_batch_size=10] [--noise_model=poisson]
  python -m ptychonet_tf.reconstruct --scan=scan.npz --method=ptychonet+dm \
      --saved_model=saved_models/small_dense --iterations=50
  python -m ptychonet_tf.reconstruct \
      --scan=../shared/data/ptycho-tike-siemens-star/siemens-star-small.npz.bz2 \
      --method=dm --refine_probe --fourier_relax=0.05 --probe_support=0.9 \
      --object_inertia=0.01 --png

--scan takes this project's scan file (docs/scan_format.md), tike's test
data (.npz / .npz.bz2) or a CXI/HDF5 file (docs/real_data.md); external
intensities become centred amplitudes. Methods:

  dm            difference map from --init (known probe unless --refine_probe)
  epie          ePIE, --iterations epochs
  lsqml         least-squares maximum likelihood (Odstrcil et al. 2018) from
                --init, --lsqml_batch_size positions per update
  pnp           plug-and-play: rounds of 10 LSQML iterations (--data_steps=dm:
                DM iterations, for noise-free data), each ending in a step
                of the learned image prior (--prior, --sigma_start,
                --sigma_end)
  ptychonet     one call of a PtychoNet SavedModel (--saved_model): its
                serving_default for a scan of the training layout, its
                any_scan signature for any other positions (docs/serving.md);
                --passes=P runs its refinement steps P times
  ptychonet+dm  DM started from the network's output (the paper's section 6)

Writes --out (.npz, temp name then rename): `object` complex64 [H, W],
`probe` complex64 [h, w], `layout` int32 [N, 4], `chi` and `fourier_error`
float32 [T] (empty for ptychonet), `seconds` (total), `seconds_per_iteration`,
`network_seconds`, `method`; with a ground-truth `object` in the scan also the
metrics (`amplitude_psnr`, ...; constant phase offset removed), which are
printed too, and `region` bool [H, W]: the illuminated region, where
sum_j |P|^2 reaches 1% of its maximum, the part of the object the data
determine and the one region every score of the package is computed on.
--png adds <out>_amplitude.png and <out>_phase.png (the box the probe
lights, clipped to the 1st..99th percentile).
"""
import dataclasses
import os

from absl import flags
import numpy as np

from ptychonet_tf import cli
from ptychonet_tf import reconstructors
from ptychonet_tf.utils import files
from ptychonet_tf.utils import machine
from ptychonet_tf.utils.errors import UserError, report_user_errors


flags.DEFINE_string("scan", None, "Scan file: .npz (this project's or tike's), "
                    ".npz.bz2 (tike) or CXI/HDF5 (.cxi, .h5, .hdf5).")
flags.DEFINE_enum("method", "dm", reconstructors.NAMES, "Reconstruction method.")
flags.DEFINE_integer("iterations", 300, "DM or LSQML iterations, or ePIE "
                     "epochs.")
flags.DEFINE_string("saved_model", None, "PtychoNet SavedModel: the export "
                    "base dir (highest numeric version is used) or a version "
                    "dir. Needed by ptychonet and ptychonet+dm.")
flags.DEFINE_bool("allow_other_probe", False, "ptychonet, ptychonet+dm: use "
                  "a SavedModel trained with another probe than the scan's "
                  "(a warning instead of a refusal).")
flags.DEFINE_string("out", "rec.npz", "Output .npz file.")
flags.DEFINE_bool("png", False, "Also write <out>_amplitude.png and "
                  "<out>_phase.png.")
flags.DEFINE_enum("init", "ones", ["ones", "random"], "Initial object of dm, "
                  "epie and lsqml.")
flags.DEFINE_integer("seed", 0, "Seed of the random initial object and of "
                     "ePIE's visiting order.")
flags.DEFINE_float("alpha", 1.0, "DM relaxation (1: classic DM) or ePIE "
                   "object step size.")
flags.DEFINE_float("beta", 1.0, "ePIE probe step size.")
flags.DEFINE_bool("refine_probe", False, "Also refine the probe (ptychonet: "
                  "in the model's refinement steps, its "
                  "any_scan_refine_probe signature; a probe other than the "
                  "model's is then warned about, not refused).")
flags.DEFINE_integer("passes", None, "ptychonet, ptychonet+dm: passes of "
                     "the model's refinement steps, each from the last "
                     "one's object and probe (its any_scan_passes signature, "
                     "or any_scan_refine_probe's passes; default 1, 20 with "
                     "--refine_probe): more converge further in "
                     "proportionally more time.")
flags.DEFINE_integer("probe_start", 10, "First iteration (epoch) that refines "
                     "the probe.")
flags.DEFINE_float("probe_support", 0.0, "DM: zero the refined probe outside "
                   "a centred disk of this fraction of the window (0: off).")
flags.DEFINE_float("fourier_relax", 0.0, "DM: power-bound factor of the "
                   "Fourier projection for noisy data (0: exact projection; "
                   "0.05 for measured data).")
flags.DEFINE_float("object_inertia", 1e-6, "DM: weight of the previous "
                   "object in the overlap projection, relative to "
                   "max(sum |P|^2).")
flags.DEFINE_bool("jit", True, "DM, LSQML: compile the iterations with XLA.")
flags.DEFINE_integer("lsqml_batch_size", 10, "LSQML: positions updated "
                     "together (1 .. the scan's positions).")
flags.DEFINE_enum("lsqml_grouping", "sparse", ["sparse", "compact"], "LSQML: "
                  "batches spread over the scan (sparse) or patches of "
                  "neighbours (compact).")
flags.DEFINE_enum("noise_model", None, ["gaussian", "poisson"], "LSQML, "
                  "pnp: likelihood of the data (gaussian: amplitude least "
                  "squares; default: the method's, gaussian for LSQML, "
                  "poisson for pnp).")
flags.DEFINE_float("object_reg", None, "LSQML, pnp: regulariser of the "
                   "object update's denominator, relative to max(sum_j "
                   "|P|^2) (default: the method's, 0.1 for LSQML, 1.0 for "
                   "pnp).")
flags.DEFINE_float("probe_reg", 0.1, "LSQML: regulariser of the probe "
                   "update's denominator, relative to max(sum_j |O_j|^2).")
flags.DEFINE_string("prior", None, "pnp: an exported image prior (a "
                    "train_prior --export_dir); default: the shipped one.")
flags.DEFINE_enum("data_steps", None, ["lsqml", "dm"], "pnp: the data steps "
                  "between the prior steps: lsqml (default; noisy data) or "
                  "dm (difference map; noise-free data, where it converges "
                  "faster, docs/baselines.md).")
flags.DEFINE_float("sigma_start", None, "pnp: the prior's noise level in the "
                   "first round (images scaled to [0, 1]; default: "
                   "PnPConfig's).")
flags.DEFINE_float("sigma_end", None, "pnp: the prior's noise level in the "
                   "last round (geometric in between; default: PnPConfig's).")
flags.DEFINE_integer("threads", 0, "CPU threads TensorFlow may use (its intra- "
                     "and inter-op pools; the process is pinned to that many "
                     "cores); 0 = auto: 1 for --method=epie (one scan's ePIE "
                     "is sequential and runs faster on one pinned core), all "
                     "cores otherwise.")
flags.DEFINE_integer("position_groups", 0, "DM with a known probe: position "
                     "groups whose half-steps run side by side (0: one per "
                     "core TensorFlow may use; 1: one compiled loop).")
flags.DEFINE_integer("margin", 4, "External scans: unscanned border (pixels) "
                     "around the scan.")
flags.DEFINE_float("pixel_size", None, "CXI: object-plane pixel size in "
                   "metres (default: lambda * z / (n * detector pixel)).")
flags.DEFINE_enum("zero_frequency", "auto", ["auto", "center", "corner"],
                  "External scans: where the patterns' zero frequency is.")
FLAGS = flags.FLAGS
# ePIE visits one position after another: a second core cannot share one
# scan's work, and a thread the OS moves between cores ran 2-25% slower than
# one pinned on the 2-core machine (docs/baselines.md, Speed).
EPIE_THREADS = 1


# --- Outputs -----------------------------------------------------------------


def _check_out(path):
  if os.path.isdir(path):
    raise UserError(f"--out={path} is a directory; expected a .npz file name")
  parent = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(parent):
    raise UserError(f"--out folder {parent} does not exist")
  if not path.endswith(".npz"):
    raise UserError(f"--out={path} must end in .npz")
  files.check_writable(path, "--out")  # a read-only or full disk, now


def save_pngs(stem, obj, mask):
  """<stem>_amplitude.png and <stem>_phase.png of the object's box around `mask`.

  The phase is shown after removing the median phase in the mask; both
  images are clipped to their 1st..99th percentile there.

  Returns:
    The two paths.
  """
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")

  rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
  box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
  obj, inner = obj[box], mask[box]
  centre = np.median(obj[inner].real) + 1j * np.median(obj[inner].imag)
  if centre != 0:
    obj = obj * np.exp(-1j * np.angle(centre))
  paths = []
  for name, image, cmap in (("amplitude", np.abs(obj), "gray"),
                            ("phase", np.angle(obj), "viridis")):
    lo, hi = np.percentile(image[inner], [1, 99])
    path = f"{stem}_{name}.png"
    files.save_image(path, image, cmap=cmap, vmin=lo,
                     vmax=hi if hi > lo else lo + 1)
    paths.append(path)
  return paths


# --- Main --------------------------------------------------------------------


def method_config(method, iterations):
  """The config of `method` from the flags (UserError on a bad value).

  Every flag that names a field of the method's config and is set (not
  None) sets it (`reconstructors.configure`); the others do not apply to
  the method.
  """
  settings = dict(
      iterations=iterations, alpha=FLAGS.alpha, beta=FLAGS.beta,
      refine_probe=FLAGS.refine_probe, probe_start=FLAGS.probe_start,
      probe_support=FLAGS.probe_support, init=FLAGS.init, seed=FLAGS.seed,
      object_inertia=FLAGS.object_inertia, fourier_relax=FLAGS.fourier_relax,
      jit_compile=FLAGS.jit, position_groups=FLAGS.position_groups,
      batch_size=FLAGS.lsqml_batch_size, grouping=FLAGS.lsqml_grouping,
      noise_model=FLAGS.noise_model, object_reg=FLAGS.object_reg,
      probe_reg=FLAGS.probe_reg, saved_model=FLAGS.saved_model,
      allow_other_probe=FLAGS.allow_other_probe, prior=FLAGS.prior,
      sigma_start=FLAGS.sigma_start, sigma_end=FLAGS.sigma_end,
      data_steps=FLAGS.data_steps, passes=FLAGS.passes)
  # A flag left unset (None) leaves the method's own default.
  return reconstructors.configure(
      method, **{k: v for k, v in settings.items() if v is not None})


@report_user_errors
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}; pass options as --flags")
  cli.require_flags("scan")
  if FLAGS.iterations < 1 and FLAGS.method != "ptychonet":
    raise UserError(f"--iterations={FLAGS.iterations} must be >= 1 for "
                    f"--method={FLAGS.method} (0 would return the starting "
                    f"guess)")
  _check_out(FLAGS.out)
  config = method_config(FLAGS.method, FLAGS.iterations)
  auto = EPIE_THREADS if FLAGS.method == "epie" else 0
  machine.set_threads(FLAGS.threads or auto)
  # Imported here so that flag errors come before TensorFlow's start-up.
  from ptychonet_tf.data import readers  # pylint: disable=g-import-not-at-top
  from ptychonet_tf.evaluation import metrics  # pylint: disable=g-import-not-at-top
  scan = readers.read_scan(FLAGS.scan, margin=FLAGS.margin,
                            pixel_size=FLAGS.pixel_size,
                            zero_frequency=FLAGS.zero_frequency)
  count, h, w = scan.amplitudes.shape
  print(f"read {FLAGS.scan}: {count} patterns of {h}x{w}, object "
        f"{scan.object_shape[0]}x{scan.object_shape[1]}", flush=True)
  result = reconstructors.reconstruct(FLAGS.method, scan.amplitudes,
                                      scan.probe, scan.layout,
                                      scan.object_shape, config)
  result = dataclasses.asdict(result)
  arrays = dict(object=result["object"].astype(np.complex64),
                probe=np.asarray(result["probe"], np.complex64),
                layout=scan.layout,
                chi=np.asarray(result["chi"], np.float32),
                fourier_error=np.asarray(result["fourier_error"], np.float32),
                seconds=np.float64(result["seconds"]),
                seconds_per_iteration=np.float64(result["seconds_per_iteration"]),
                network_seconds=np.float64(result["network_seconds"]),
                method=np.str_(FLAGS.method))
  cores = len(machine.usable_cores())
  line = (f"{FLAGS.method}: {result['seconds']:.2f} s on {cores} "
          f"core{'s' if cores > 1 else ''}")
  if len(result["chi"]):
    unit = "epoch" if FLAGS.method == "epie" else "iteration"
    line += (f", {result['seconds_per_iteration'] * 1e3:.1f} ms per {unit}; "
             f"chi {result['chi'][0]:.2e} -> {result['chi'][-1]:.2e}, "
             f"Fourier error {result['fourier_error'][-1]:.2e}")
  if FLAGS.method.startswith("ptychonet"):
    line += f"; network {result['network_seconds'] * 1e3:.1f} ms"
  print(line)
  if len(result["chi"]) >= 20:
    tenths = np.array_split(np.asarray(result["chi"], np.float64), 10)
    print("chi, mean of each tenth of the run: " +
          " ".join(f"{np.mean(part):.2e}" for part in tenths))
  # The part of the object the data determine, written beside it: the
  # package's one scored region, with the probe the method ended with.
  mask = metrics.illuminated_region(scan.layout, scan.object_shape,
                                    arrays["probe"])
  arrays["region"] = mask
  print(f"{metrics.region_name()}: {int(mask.sum())} of {mask.size} pixels "
        f"(saved as `region`); outside it the data barely constrain the "
        f"object")
  if scan.object is not None:
    scores = metrics.complex_metrics(arrays["object"], scan.object, mask)
    for key, value in scores.items():
      arrays[key] = np.float64(value)
    print(f"{metrics.region_name()}, phase offset removed: amplitude PSNR "
          f"{scores['amplitude_psnr']:.2f} dB, SSIM "
          f"{scores['amplitude_ssim']:.4f}; phase PSNR "
          f"{scores['phase_psnr']:.2f} dB, SSIM {scores['phase_ssim']:.4f}")
  files.save_npz(FLAGS.out, **arrays)
  print(f"wrote {FLAGS.out}")
  if FLAGS.png:
    # Show where the probe lit the object (the rim only its faint tails reach
    # is noise on measured data).
    lit = metrics.illuminated_region(scan.layout, scan.object_shape,
                                     arrays["probe"], 0.02)
    for path in save_pngs(FLAGS.out[:-len(".npz")], arrays["object"], lit):
      print(f"wrote {path}")


def run():
  cli.run_command(main, __name__)


if __name__ == "__main__":
  run()
