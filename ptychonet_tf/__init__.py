"""PtychoNet in TensorFlow: learned ptychographic phase retrieval and its tooling.

Layout of the package (the architecture follows the folders):

- ``physics/``: probe, scan layouts, objects, the far-field forward model and
  the extract <-> stitch operator pair.
- ``data/``: image sources, the scan file format, the TFRecord schema, writer
  and tf.data pipeline.
- thin entry points: ``simulate.py`` (and ``tools/make_tfrecords.py`` at the
  repository root).
"""
import os as _os

# Keep TensorFlow's C++ start-up chatter out of the CLI's output; a user can
# still override this from the environment.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
