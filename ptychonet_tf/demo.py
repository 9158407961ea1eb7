"""`python -m ptychonet_tf.demo`: the command lives in `ptychonet_tf/cli/demo.py`."""
from ptychonet_tf.cli.demo import run

if __name__ == "__main__":
  run()
