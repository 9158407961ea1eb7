"""Training of PtychoNet: config, distribution strategies, the custom loop, held-out evaluation, run directories."""
from ptychonet_tf.training.config import TrainConfig
