"""`python -m ptychonet_tf.train`: the command lives in `ptychonet_tf/cli/train.py`."""
from ptychonet_tf.cli.train import run

if __name__ == "__main__":
  run()
