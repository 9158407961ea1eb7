"""`python -m ptychonet_tf.reconstruct`: the command lives in `ptychonet_tf/cli/reconstruct.py`."""
from ptychonet_tf.cli.reconstruct import run

if __name__ == "__main__":
  run()
