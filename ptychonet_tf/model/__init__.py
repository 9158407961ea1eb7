"""PtychoNet: the per-pattern network, the stitching layer and the losses."""
from ptychonet_tf.model.layers import StitchPatches
from ptychonet_tf.model.network import NetworkConfig, PtychoNet, build_model
