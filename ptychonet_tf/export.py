"""`python -m ptychonet_tf.export`: the command lives in `ptychonet_tf/cli/export.py`."""
from ptychonet_tf.cli.export import run

if __name__ == "__main__":
  run()
