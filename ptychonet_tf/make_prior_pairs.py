"""`python -m ptychonet_tf.make_prior_pairs`: the command lives in `ptychonet_tf/cli/make_prior_pairs.py`."""
from ptychonet_tf.cli.make_prior_pairs import run

if __name__ == "__main__":
  run()
