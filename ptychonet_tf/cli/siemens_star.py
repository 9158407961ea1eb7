r"""Reconstructs the measured Siemens-star scan with DM and draws docs/images/siemens_star.png.

  python tools/siemens_star.py [--data=../shared/data/ptycho-tike-siemens-star/siemens-star-small.npz.bz2 \
      --iterations=300 --probe_start=10 --out=docs/images/siemens_star.png]

The scan (tike's test data, APS Velociprobe) is 516 far-field patterns of
128x128 photon counts with jittered positions and an initial probe guess; it
has no ground truth. DM starts from a flat object and refines the probe from
iteration --probe_start on, with the settings for measured data: Fourier
power bound (--fourier_relax), probe support (--probe_support) and object
inertia (--object_inertia), see docs/baselines.md. The figure shows the object
amplitude and phase (the scanned region, phase offset set so that the median
is 0), the refined probe and the chi / Fourier-error history.
"""
import io
import os

from absl import flags
import numpy as np
from PIL import Image

from ptychonet_tf import cli
from ptychonet_tf.evaluation import metrics
from ptychonet_tf.baselines import dm
from ptychonet_tf.data import readers
from ptychonet_tf.utils import files
from ptychonet_tf.utils.errors import UserError, report_user_errors

# The repository root of an editable install (make install): ptychonet_tf/cli/..
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DATA = os.path.join(os.path.dirname(REPO), "shared", "data",
                            "ptycho-tike-siemens-star",
                            "siemens-star-small.npz.bz2")

flags.DEFINE_string("data", DEFAULT_DATA, "The tike Siemens-star file.")
flags.DEFINE_integer("iterations", 300, "DM iterations.")
flags.DEFINE_integer("probe_start", 10, "First iteration that refines the probe.")
flags.DEFINE_float("probe_support", 0.9, "Probe support (fraction of the window).")
flags.DEFINE_float("fourier_relax", 0.05, "Fourier power-bound factor.")
flags.DEFINE_float("object_inertia", 0.01, "Object inertia of the overlap projection.")
flags.DEFINE_string("out", os.path.join(REPO, "docs", "images",
                                        "siemens_star.png"), "Output PNG.")
flags.DEFINE_string("save", None, "Also write the reconstruction to this .npz.")
FLAGS = flags.FLAGS


def draw(path, scan, result):
  """Amplitude, phase, probe amplitude and the error history in one figure."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top

  # Crop to where the refined probe lit the object (the scanned region's
  # rim, reached only by the probe's faint tails, is noise).
  mask = metrics.illuminated_region(scan.layout, scan.object_shape,
                                    result.probe, 0.05)
  rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
  crop = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
  obj = result.object[crop]
  inner = mask[crop]
  obj = obj * np.exp(-1j * np.angle(np.median(obj[inner].real) +
                                    1j * np.median(obj[inner].imag)))
  amplitude = np.abs(obj)
  phase = np.angle(obj)
  lo, hi = np.percentile(amplitude[inner], [1, 99])
  plo, phi = np.percentile(phase[inner], [1, 99])
  fig, axes = plt.subplots(1, 4, figsize=(17, 4.4),
                           gridspec_kw=dict(width_ratios=[1, 1, 0.8, 1]))
  im = axes[0].imshow(amplitude, cmap="gray", vmin=lo, vmax=hi)
  axes[0].set_title("object amplitude")
  fig.colorbar(im, ax=axes[0], fraction=0.046)
  im = axes[1].imshow(phase, cmap="viridis", vmin=plo, vmax=phi)
  axes[1].set_title("object phase (rad)")
  fig.colorbar(im, ax=axes[1], fraction=0.046)
  axes[2].imshow(np.abs(result.probe), cmap="magma")
  axes[2].set_title("refined probe amplitude")
  for ax in axes[:3]:
    ax.set_xticks([])
    ax.set_yticks([])
  # Iteration 1's chi compares the first overlap projection with the flat
  # start it reproduces (~0); the curves start at iteration 2.
  steps = np.arange(2, len(result.chi) + 1)
  axes[3].semilogy(steps, result.chi[1:], label="chi")
  axes[3].semilogy(steps, result.fourier_error[1:], label="Fourier error")
  axes[3].set_xlabel("DM iteration")
  axes[3].legend()
  axes[3].set_title("convergence")
  count, h, w = scan.amplitudes.shape
  fig.suptitle(f"Measured Siemens star (tike test data, APS Velociprobe): "
               f"{count} patterns of {h}x{w}, DM {len(result.chi)} iterations "
               f"with probe refinement")
  fig.tight_layout()
  buffer = io.BytesIO()
  fig.savefig(buffer, format="png", dpi=80)
  plt.close(fig)
  # A 256-colour palette keeps the file small for the repository.
  image = Image.open(buffer).convert("RGB").quantize(256)
  files.atomic_write(path, lambda tmp: image.save(tmp, format="PNG",
                                                  optimize=True))


@report_user_errors
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}; pass options as --flags")
  if not os.path.isfile(FLAGS.data):
    raise UserError(f"--data={FLAGS.data} does not exist (the tike "
                    f"siemens-star-small.npz.bz2 file)")
  out_dir = os.path.dirname(os.path.abspath(FLAGS.out))
  if not os.path.isdir(out_dir):
    raise UserError(f"--out folder {out_dir} does not exist")
  if FLAGS.iterations <= FLAGS.probe_start:
    raise UserError(f"--iterations={FLAGS.iterations} must exceed "
                    f"--probe_start={FLAGS.probe_start}")
  scan = readers.read_scan(FLAGS.data)
  count, h, w = scan.amplitudes.shape
  print(f"read {FLAGS.data}: {count} patterns of {h}x{w}, object "
        f"{scan.object_shape[0]}x{scan.object_shape[1]}")
  config = dm.DMConfig(iterations=FLAGS.iterations, refine_probe=True,
                       probe_start=FLAGS.probe_start, init="ones",
                       probe_support=FLAGS.probe_support,
                       fourier_relax=FLAGS.fourier_relax,
                       object_inertia=FLAGS.object_inertia, progress=True)
  result = dm.difference_map(scan.amplitudes, scan.probe, scan.layout,
                             scan.object_shape, config)
  print(f"DM: {result.seconds:.1f} s, {result.seconds_per_iteration:.3f} s per "
        f"iteration; chi {result.chi[-1]:.2e}, Fourier error "
        f"{result.fourier_error[-1]:.2e}")
  if FLAGS.save:
    if not FLAGS.save.endswith(".npz"):
      raise UserError(f"--save={FLAGS.save} must end in .npz")
    files.save_npz(FLAGS.save, object=result.object, probe=result.probe,
                   layout=scan.layout, chi=result.chi,
                   fourier_error=result.fourier_error)
  draw(FLAGS.out, scan, result)
  print(f"wrote {FLAGS.out}")


def run():
  cli.run_command(main, __name__)


if __name__ == "__main__":
  run()
