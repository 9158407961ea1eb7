r"""Trains the learned image prior (a noise-level-conditioned denoiser); resumes.

  python -m ptychonet_tf.train_prior --flagfile=configs/prior.flags \
      [--model_dir=runs/prior --export_dir=runs/prior/export \
       --ship_dir=ptychonet_tf/prior/weights \
       --images=default+procedural:256 --steps=8000 --batch_size=32]

Random patches of the --images source's train pool, with white Gaussian
noise of a random level in [0, --sigma_max], train a small U-Net to remove
the noise given its level. The resolved flags go to <model_dir>/flags.txt;
checkpoints and TensorBoard logs (train/, eval/: PSNR of the source's test
pool at sigma 0.02, 0.05, 0.1) to model_dir. Killed and started again with the
same flags, a run continues from its last checkpoint. At the end the weights
(prior.json, prior.npz, what `ptychonet_tf.prior.load(DIR)` reads) and a
SavedModel (saved_model/) go to --export_dir, and prior.json and prior.npz
also to --ship_dir when set. See docs/prior.md.
"""
import os

from absl import flags

from ptychonet_tf import cli
from ptychonet_tf.data import images as images_lib
from ptychonet_tf.prior import config as config_lib
from ptychonet_tf.utils import files
from ptychonet_tf.utils import locks
from ptychonet_tf.utils import machine
from ptychonet_tf.utils.errors import UserError, report_user_errors

flags.DEFINE_string("model_dir", None, "Run directory: checkpoints, "
                    "TensorBoard logs, flags.txt, prior.json.")
flags.DEFINE_string("export_dir", None, "Where the trained prior goes "
                    "(prior.json, prior.npz, saved_model/); none if unset.")
flags.DEFINE_string("ship_dir", None, "Where prior.json and prior.npz are "
                    "also copied at the end (configs/prior.flags: the "
                    "package's ptychonet_tf/prior/weights/).")
flags.DEFINE_string("images", "default+procedural:256",
                    "Image source of the training patches (its train pool) "
                    "and of the validation crops (its test pool): default, "
                    "procedural[:N], dead_leaves[:N], a folder, a glob, "
                    "tfds:NAME, or several joined by '+'.")
flags.DEFINE_list("channels", ["32", "64", "128"],
                  "Feature channels per U-Net scale, finest first.")
flags.DEFINE_integer("blocks", 2, "Residual blocks per scale and stage.")
flags.DEFINE_bool("use_bias", False, "Convolutions with biases.")
flags.DEFINE_integer("patch_size", 64, "Side of the training patches.")
flags.DEFINE_float("sigma_max", 0.2, "Noise levels are drawn uniformly from "
                   "[0, sigma_max] (images in [0, 1]).")
flags.DEFINE_float("procedural_fraction", 0.3, "Share of patches cut from "
                   "procedural images when the source has others too.")
flags.DEFINE_float("scale_probability", 0.5, "Share of patches cut at twice "
                   "the size and averaged 2x2.")
flags.DEFINE_integer("batch_size", 32, "Patches per step.")
flags.DEFINE_integer("steps", 8000, "Training steps in all.")
flags.DEFINE_float("learning_rate", 1e-3, "Peak learning rate (Adam).")
flags.DEFINE_integer("warmup_steps", 200, "Linear warm-up steps.")
flags.DEFINE_float("final_lr_fraction", 0.01, "The cosine decay ends at "
                   "learning_rate times this.")
flags.DEFINE_enum("loss", "relative_mse", ["mse", "l1", "relative_mse"],
                  "relative_mse: each patch's squared error over "
                  "sigma^2 + 0.01^2, so every noise level counts alike.")
flags.DEFINE_bool("mixed_precision", True, "bfloat16 compute, float32 "
                  "variables (fast on CPUs with AMX/AVX512-BF16).")
flags.DEFINE_integer("seed", 0, "Seed of the initial weights and the patches.")
flags.DEFINE_integer("log_every", 50, "Steps between progress lines.")
flags.DEFINE_integer("eval_every", 500, "Steps between validation PSNRs.")
flags.DEFINE_integer("checkpoint_every", 250, "Steps between checkpoints.")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept.")
flags.DEFINE_integer("eval_size", 128, "Side of the validation crops.")
flags.DEFINE_string("init_from", None, "An exported prior whose weights a "
                    "new run starts from (fine-tuning).")
flags.DEFINE_string("pairs", None, "npz files of (noisy, clean) pairs "
                    "(python -m ptychonet_tf.make_prior_pairs), comma-"
                    "separated, that "
                    "--pair_fraction of the patches are cut from.")
flags.DEFINE_float("pair_fraction", 0.5, "Share of the patches cut from "
                   "--pairs.")
flags.DEFINE_integer("threads", 0, "CPU threads TensorFlow may use (0: all).")
FLAGS = flags.FLAGS


def prior_config():
  """The PriorTrainConfig of the parsed flags."""
  try:
    channels = tuple(int(c) for c in FLAGS.channels)
  except ValueError:
    raise UserError(f"--channels={','.join(FLAGS.channels)} must be "
                    f"integers, e.g. 32,64,128") from None
  return config_lib.PriorTrainConfig(
      model_dir=FLAGS.model_dir, export_dir=FLAGS.export_dir,
      ship_dir=FLAGS.ship_dir, images=FLAGS.images,
      network=config_lib.NetworkSettings(channels=channels, blocks=FLAGS.blocks,
                                       use_bias=FLAGS.use_bias),
      patches=config_lib.PatchConfig(
          patch_size=FLAGS.patch_size, sigma_max=FLAGS.sigma_max,
          procedural_fraction=FLAGS.procedural_fraction,
          scale_probability=FLAGS.scale_probability, seed=FLAGS.seed),
      batch_size=FLAGS.batch_size, steps=FLAGS.steps,
      learning_rate=FLAGS.learning_rate, warmup_steps=FLAGS.warmup_steps,
      final_lr_fraction=FLAGS.final_lr_fraction, loss=FLAGS.loss,
      mixed_precision=FLAGS.mixed_precision, log_every=FLAGS.log_every,
      eval_every=FLAGS.eval_every, checkpoint_every=FLAGS.checkpoint_every,
      keep_checkpoints=FLAGS.keep_checkpoints, eval_size=FLAGS.eval_size,
      init_from=FLAGS.init_from, pairs=FLAGS.pairs,
      pair_fraction=FLAGS.pair_fraction)


@report_user_errors
def main(argv):
  if len(argv) > 1:
    raise UserError(f"unexpected arguments {argv[1:]}; pass options as --flags")
  cli.require_flags("model_dir")
  config = prior_config().validate()
  images_lib.open_image_pools(config.images)  # a missing source, before TF
  machine.set_threads(FLAGS.threads)
  from ptychonet_tf.prior import training  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(FLAGS.seed)  # the initialisation seed
  with locks.hold(config.model_dir, "train_prior"):
    training.check_run_dir(config)
    files.write_text(os.path.join(config.model_dir, training.FLAGS_FILE),
                     FLAGS.flags_into_string())
    training.train(config)


def run():
  cli.run_command(main, __name__)


if __name__ == "__main__":
  run()
