"""`python tools/check_tfrecords.py`: the command lives in `ptychonet_tf/cli/check_tfrecords.py`.

Needs the package installed (`make install` or `pip install -e .`).
"""
from _launch import launch

if __name__ == "__main__":
  launch("check_tfrecords")
