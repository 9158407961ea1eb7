"""The learned image prior: a noise-level-conditioned denoiser for one real channel.

`PriorDenoiser` is a small DRUNet-style U-Net: the noisy image and a constant
map of its noise level sigma go in as two channels, residual blocks work at
`len(channels)` scales (strided 2x2 convolutions down, transposed 2x2
convolutions up, additive skips), and the network predicts the noise, which
is subtracted from the input (residual learning). Images of any size of at
least `multiple` pixels a side are reflect-padded at the bottom and right to a
multiple of `multiple = 2 ** (len(channels) - 1)` inside the call and cropped
back, so the layer works on any object size, inside `tf.function`, with
`jit_compile=True`, and inside another Keras model or SavedModel.

Images are float32 in about [0, 1]; sigma is the standard deviation of
additive white Gaussian noise on that scale.
"""
import keras
import numpy as np
import tensorflow as tf


def _conv(filters, kernel, use_bias, name, dtype, strides=1,
          initializer="glorot_uniform"):
  return keras.layers.Conv2D(filters, kernel, strides=strides, padding="same",
                             use_bias=use_bias, name=name, dtype=dtype,
                             kernel_initializer=initializer)


@keras.saving.register_keras_serializable(package="ptychonet_tf.prior")
class PriorDenoiser(keras.layers.Layer):
  """Denoises real images given their noise level: (x, sigma) -> denoised x.

  Args:
    channels: feature channels per scale, finest first, e.g. (32, 64, 128);
      the U-Net downsamples len(channels) - 1 times.
    blocks: residual blocks (conv-ReLU-conv plus identity) per scale in the
      encoder, in the decoder and at the coarsest scale.
    use_bias: whether the convolutions have biases (DRUNet's are bias-free).
    **kwargs: passed to keras.layers.Layer (name, dtype, trainable).

  Call args:
    x: float32 [batch, H, W] or [H, W], the noisy images (about [0, 1]);
      H, W >= `multiple`.
    sigma: float32 scalar, [batch] or [batch, 1, 1]: the noise standard
      deviation of each image on the same scale as x.

  Returns:
    float32, the shape of x: the denoised images.
  """

  def __init__(self, channels=(32, 64, 128), blocks=2, use_bias=False,
               **kwargs):
    super().__init__(**kwargs)
    self.channels = tuple(int(c) for c in channels)
    self.blocks = int(blocks)
    self.use_bias = bool(use_bias)
    if not self.channels or min(self.channels) < 1 or self.blocks < 0:
      raise ValueError(f"channels {channels} must be positive and blocks "
                       f"{blocks} >= 0")
    self.multiple = 2 ** (len(self.channels) - 1)
    b, dtype = self.use_bias, self.dtype_policy  # sublayers share the policy
    self.head = _conv(self.channels[0], 3, b, "head", dtype)
    self.down_blocks, self.downs, self.up_blocks, self.ups = [], [], [], []
    for i, c in enumerate(self.channels[:-1]):
      self.down_blocks.append(self._blocks(c, f"enc{i}"))
      self.downs.append(self._track(_conv(self.channels[i + 1], 2, b,
                                          f"down{i}", dtype, strides=2)))
      self.ups.append(self._track(keras.layers.Conv2DTranspose(
          c, 2, strides=2, padding="same", use_bias=b, name=f"up{i}",
          dtype=dtype)))
      self.up_blocks.append(self._blocks(c, f"dec{i}"))
    self.body = self._blocks(self.channels[-1], "body")
    # Zero-initialised: an untrained denoiser returns its input.
    self.tail = _conv(1, 3, b, "tail", dtype, initializer="zeros")

  def _blocks(self, filters, name):
    dtype = self.dtype_policy
    blocks = []
    for j in range(self.blocks):
      pair = (_conv(filters, 3, self.use_bias, f"{name}_{j}a", dtype),
              _conv(filters, 3, self.use_bias, f"{name}_{j}b", dtype))
      for conv in pair:
        self._track(conv)
      blocks.append(pair)
    return blocks

  def _track(self, layer):
    """Makes `layer` an attribute named after it: TensorFlow checkpoints and
    SavedModels see a layer's attributes, not layers inside its lists, so
    without this only the head and tail would be saved in them (the order
    of `weights`, creation order, stays as it was)."""
    setattr(self, f"_{layer.name}", layer)
    return layer

  def build(self, x_shape=None, sigma_shape=None):
    shape = (None, None, None, 2)
    self.head.build(shape)
    for i, c in enumerate(self.channels[:-1]):
      for conv_a, conv_b in self.down_blocks[i]:
        conv_a.build((None, None, None, c))
        conv_b.build((None, None, None, c))
      self.downs[i].build((None, None, None, c))
      self.ups[i].build((None, None, None, self.channels[i + 1]))
      for conv_a, conv_b in self.up_blocks[i]:
        conv_a.build((None, None, None, c))
        conv_b.build((None, None, None, c))
    for conv_a, conv_b in self.body:
      conv_a.build((None, None, None, self.channels[-1]))
      conv_b.build((None, None, None, self.channels[-1]))
    self.tail.build((None, None, None, self.channels[0]))
    self.built = True

  @staticmethod
  def _run_blocks(blocks, h):
    for conv_a, conv_b in blocks:
      h = h + conv_b(tf.nn.relu(conv_a(h)))
    return h

  def predict_noise(self, x, sigma_map):
    """The U-Net itself: [B, H, W, 1] and [B, H, W, 1] -> noise [B, H, W, 1].

    H and W must be multiples of `multiple`.
    """
    h = self.head(tf.concat([x, sigma_map], axis=-1))
    skips = []
    for i in range(len(self.channels) - 1):
      h = self._run_blocks(self.down_blocks[i], h)
      skips.append(h)
      h = self.downs[i](h)
    h = self._run_blocks(self.body, h)
    for i in reversed(range(len(self.channels) - 1)):
      h = self.ups[i](h) + skips[i]
      h = self._run_blocks(self.up_blocks[i], h)
    return self.tail(h)

  def __call__(self, x, sigma, **kwargs):
    # Keras takes only tensors as positional arguments: x and sigma may also
    # be numpy arrays or Python numbers.
    def as_tensor(value):
      if isinstance(value, (int, float, list, tuple, np.ndarray, np.generic)):
        return tf.convert_to_tensor(value, tf.float32)
      return value
    return super().__call__(as_tensor(x), as_tensor(sigma), **kwargs)

  def call(self, x, sigma):
    x = tf.convert_to_tensor(x)
    single = x.shape.rank == 2
    if single:
      x = x[None]
    if x.shape.rank != 3:
      raise ValueError(f"x has shape {x.shape}; expected [batch, H, W] or "
                       f"[H, W]")
    compute = self.compute_dtype
    x = tf.cast(x, tf.float32)
    shape = tf.shape(x)
    batch, height, width = shape[0], shape[1], shape[2]
    sigma = tf.cast(tf.convert_to_tensor(sigma), tf.float32)
    sigma = tf.reshape(sigma, [-1, 1, 1, 1]) * tf.ones([batch, 1, 1, 1])
    m = self.multiple
    pad_h = (m - height % m) % m
    pad_w = (m - width % m) % m
    padded = tf.pad(x[..., None], [[0, 0], [0, pad_h], [0, pad_w], [0, 0]],
                    mode="REFLECT")
    sigma_map = sigma * tf.ones_like(padded)
    # The network runs in the compute dtype (bfloat16 under mixed precision);
    # the residual is subtracted in float32, so the output keeps the input's
    # precision.
    noise = self.predict_noise(tf.cast(padded, compute),
                               tf.cast(sigma_map, compute))
    out = (padded - tf.cast(noise, tf.float32))[:, :height, :width, 0]
    return out[0] if single else out

  def compute_output_shape(self, x_shape, sigma_shape=None):
    return x_shape

  def get_config(self):
    config = super().get_config()
    config.update(channels=list(self.channels), blocks=self.blocks,
                  use_bias=self.use_bias)
    return config
