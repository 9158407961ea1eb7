"""PtychoNet: the per-pattern network, the stitching layer, the losses, SavedModel export and loading."""
from ptychonet_tf.model.layers import StitchPatches
from ptychonet_tf.model.network import NetworkConfig, PtychoNet, build_model
