"""Training of PtychoNet: config, distribution strategies, the custom loop, export."""
from ptychonet_tf.training.config import TrainConfig
