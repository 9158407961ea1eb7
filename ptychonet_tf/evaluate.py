"""`python -m ptychonet_tf.evaluate`: the command lives in `ptychonet_tf/cli/evaluate.py`."""
from ptychonet_tf.cli.evaluate import run

if __name__ == "__main__":
  run()
