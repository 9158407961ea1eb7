"""`python -m ptychonet_tf.train_prior`: the command lives in `ptychonet_tf/cli/train_prior.py`."""
from ptychonet_tf.cli.train_prior import run

if __name__ == "__main__":
  run()
