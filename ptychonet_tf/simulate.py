"""`python -m ptychonet_tf.simulate`: the command lives in `ptychonet_tf/cli/simulate.py`."""
from ptychonet_tf.cli.simulate import run

if __name__ == "__main__":
  run()
