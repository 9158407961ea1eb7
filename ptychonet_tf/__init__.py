"""PtychoNet in TensorFlow: learned ptychographic phase retrieval and its tooling.

Layout of the package (the architecture follows the folders):

- ``physics/``: probe, scan layouts, the window operator (extract <-> stitch
  adjoint pair and coverage), far-field forward model, objects, geometry,
  the batched simulator.
- ``data/``: image sources, the scan file format, readers for measured scans,
  the TFRecord schema, writer, shard checker and tf.data pipeline.
- ``model/``: the per-pattern network, the stitching layer, losses, SavedModel
  export and loading.
- ``training/``: config, distribution strategies, the custom training loop,
  held-out evaluation, run directories.
- ``baselines/``: difference map and ePIE in TensorFlow.
- ``evaluation/``: metrics, the methods compared, the paper's tables and
  figures.
- ``utils/``: one-line user errors, atomic file writes.
- ``cli/``: every command-line entry point, the only place that reads flags
  (``python -m ptychonet_tf.<name>`` and ``tools/*.py`` run them).
"""
import os as _os

# Keep TensorFlow's C++ start-up chatter out of the CLI's output; a user can
# still override this from the environment.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"
