r"""The prior's denoising PSNR on held-out photos, next to a Gaussian filter and BM3D.

  python benchmarks/bench_prior.py [--prior=DIR] \
      [--images=../shared/data/imagenet-sample-gray/images] [--count=24] \
      [--size=128] [--sigmas=0.02,0.05,0.1] [--seed=0] [--nobm3d]

Takes the first --count images of the test pool that `open_image_pools`
holds out of --images (test_fraction 0.1: images no prior is trained on),
their central --size x --size crops in [0, 1], adds white Gaussian noise of
each level in --sigmas (one noise draw per image, seeded by --seed, scaled to
each level) and denoises them with:

- the Gaussian filter whose width is best for that level (chosen on these
  same images from a grid of widths: an upper bound for a linear blur);
- BM3D (the `bm3d` package, told the true sigma; `pip install bm3d` or
  `pip install -e ".[bench]"`; skipped with a message when it is missing);
- the learned prior (`ptychonet_tf.prior.load(--prior)`: the shipped weights
  by default), told the true sigma.

Prints the CPU, then a markdown table of mean PSNR (dB, peak 1, outputs not
clipped) per method and level, and the seconds per image of each method.
"""
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags
import numpy as np
from scipy import ndimage

from ptychonet_tf.data import images as images_lib
from ptychonet_tf.utils import machine
from ptychonet_tf.utils.errors import UserError, report_user_errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
flags.DEFINE_string("prior", None, "An exported prior (prior.json, "
                    "prior.npz); default: the shipped one.")
flags.DEFINE_string("images", os.path.join(
    os.path.dirname(REPO), "shared", "data", "imagenet-sample-gray", "images"),
                    "Image source whose held-out test pool is denoised.")
flags.DEFINE_integer("count", 24, "Held-out images to use.")
flags.DEFINE_integer("size", 128, "Side of the central crops.")
flags.DEFINE_list("sigmas", ["0.02", "0.05", "0.1"],
                  "Noise levels (images in [0, 1]).")
flags.DEFINE_integer("seed", 0, "Seed of the noise.")
flags.DEFINE_bool("bm3d", True, "Run BM3D (needs the bm3d package).")
FLAGS = flags.FLAGS

# Gaussian filter widths (pixels) searched for the best one per level.
BLUR_WIDTHS = tuple(np.round(np.arange(0.3, 3.01, 0.1), 2))


def psnr(estimate, truth):
  """PSNR in dB (peak 1) of one float image against its truth."""
  mse = np.mean((np.asarray(estimate, np.float64) - truth) ** 2)
  return 10 * np.log10(1.0 / max(mse, 1e-20))


def held_out_crops(spec, count, size):
  """float32 [n, size, size]: central crops of the first `count` test-pool
  images of `spec` that are at least size a side."""
  _, test = images_lib.open_image_pools(spec, test_fraction=0.1)
  crops = []
  for ref in test:
    image = images_lib.load_image(ref)
    if min(image.shape) < size:
      continue
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    crops.append(image[top:top + size, left:left + size])
    if len(crops) == count:
      break
  if not crops:
    raise UserError(f"no held-out image of {spec} is at least {size}x{size}")
  return np.stack(crops).astype(np.float32)


def best_blur(clean, noisy):
  """(mean PSNR, width, seconds per image) of the best Gaussian filter."""
  best = (-np.inf, None)
  for width in BLUR_WIDTHS:
    score = np.mean([psnr(ndimage.gaussian_filter(n, width), c)
                     for n, c in zip(noisy, clean)])
    best = max(best, (score, width))
  start = time.perf_counter()
  for n in noisy:
    ndimage.gaussian_filter(n, best[1])
  return best[0], best[1], (time.perf_counter() - start) / len(noisy)


@report_user_errors
def main(argv):
  del argv
  try:
    sigmas = [float(s) for s in FLAGS.sigmas]
  except ValueError:
    raise UserError(f"--sigmas={','.join(FLAGS.sigmas)} must be numbers, "
                    f"e.g. 0.02,0.05,0.1") from None
  if not os.path.exists(FLAGS.images) and ":" not in FLAGS.images:
    raise UserError(f"--images={FLAGS.images} does not exist")
  bm3d = None
  if FLAGS.bm3d:
    try:
      import bm3d  # pylint: disable=g-import-not-at-top
    except ImportError:
      print("BM3D skipped: the bm3d package is not installed "
            "(pip install bm3d, or pip install -e '.[bench]')")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from ptychonet_tf import prior  # pylint: disable=g-import-not-at-top
  clean = held_out_crops(FLAGS.images, FLAGS.count, FLAGS.size)
  denoiser = prior.load(FLAGS.prior)
  denoise = tf.function(denoiser, jit_compile=False)
  rng = np.random.default_rng(FLAGS.seed)
  noise = rng.standard_normal(clean.shape).astype(np.float32)
  print(f"CPU: {machine.cpu_description()}")
  print(f"{len(clean)} held-out images of {FLAGS.images} (test pool), "
        f"{FLAGS.size}x{FLAGS.size} central crops; prior "
        f"{FLAGS.prior or prior.DEFAULT_DIR}")
  rows = {"noisy input": [], "Gaussian filter (best width)": [],
          "BM3D": [], "learned prior": []}
  seconds = {k: [] for k in rows}
  widths = []
  for sigma in sigmas:
    noisy = clean + np.float32(sigma) * noise
    rows["noisy input"].append(np.mean([psnr(n, c)
                                        for n, c in zip(noisy, clean)]))
    score, width, secs = best_blur(clean, noisy)
    rows["Gaussian filter (best width)"].append(score)
    seconds["Gaussian filter (best width)"].append(secs)
    widths.append(width)
    if bm3d is not None:
      start = time.perf_counter()
      out = [bm3d.bm3d(n.astype(np.float64), sigma_psd=sigma) for n in noisy]
      seconds["BM3D"].append((time.perf_counter() - start) / len(noisy))
      rows["BM3D"].append(np.mean([psnr(o, c) for o, c in zip(out, clean)]))
    sig = tf.fill([len(noisy)], np.float32(sigma))
    denoise(tf.constant(noisy), sig)  # traced once per level, not timed
    start = time.perf_counter()
    out = denoise(tf.constant(noisy), sig).numpy()
    seconds["learned prior"].append((time.perf_counter() - start) / len(noisy))
    rows["learned prior"].append(np.mean([psnr(o, c)
                                          for o, c in zip(out, clean)]))
    print(f"sigma {sigma:g} done", file=sys.stderr, flush=True)
  header = " | ".join(f"sigma {s:g} ({s * 255:.0f}/255)" for s in sigmas)
  print(f"\n| method | {header} | seconds / image |")
  print("|---|" + "---|" * len(sigmas) + "---|")
  for name, values in rows.items():
    if not values:
      continue
    secs = (f"{np.mean(seconds[name]):.3g}" if seconds[name] else "-")
    print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in values) +
          f" | {secs} |")
  print(f"\nGaussian filter widths (pixels): "
        + ", ".join(f"sigma {s:g}: {w:g}" for s, w in zip(sigmas, widths)))
  if rows["BM3D"]:
    print("learned prior - BM3D (dB): " + ", ".join(
        f"sigma {s:g}: {p - b:+.2f}" for s, p, b in
        zip(sigmas, rows["learned prior"], rows["BM3D"])))
  print("learned prior seconds / image: the batch of all images in one call "
        "(float32, 2 cores shared with the other methods' runs)")


if __name__ == "__main__":
  app.run(main)
