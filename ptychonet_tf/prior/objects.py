"""A denoiser of [0, 1] images applied to complex objects, on the lit region.

The prior is trained on images scaled to about [0, 1]. An object's real
images (its real and imaginary parts, or its amplitude and phase) have other
offsets and ranges, so each is mapped to that scale first: its mean on the
region the probe lights goes to 0.5 and its standard deviation there to
TARGET_STD (a natural photograph's, about), it is denoised at noise level
sigma (in those units), mapped back, and put in place on the lit region;
pixels outside keep their values. Plug-and-play (`baselines/pnp.py`) and
the learned model's prior steps (`model/refinement.py`) both call
`denoise_object`; it is TensorFlow throughout (inside `tf.function` and XLA),
and eager callers may pass a numpy denoiser (e.g. BM3D in the benchmarks).
"""
import tensorflow as tf

from ptychonet_tf.physics import forward

DOMAINS = ("complex", "amplitude_phase")
# The standard deviation an object's image is scaled to: that of a typical
# photograph scaled to [0, 1].
TARGET_STD = 0.25


def denoise_images(denoiser, images, lit, sigma):
  """Denoises real images on their lit region, each in its own scale.

  Args:
    denoiser: callable(x float32 [B, H, W], sigma float32 [B]) -> [B, H, W].
    images: float32 [B, H, W].
    lit: float32 [B, H, W] or [H, W], 1 on the region to denoise, else 0.
    sigma: float32 scalar or [B], the noise level in the scaled units.

  Returns:
    float32 [B, H, W]: the denoised images on the lit region, the input
    elsewhere.
  """
  images = tf.convert_to_tensor(images, tf.float32)
  lit = tf.broadcast_to(tf.cast(lit, tf.float32), tf.shape(images))
  count = tf.maximum(tf.reduce_sum(lit, axis=(1, 2), keepdims=True), 1.0)
  mean = tf.reduce_sum(images * lit, axis=(1, 2), keepdims=True) / count
  variance = tf.reduce_sum(tf.square(images - mean) * lit, axis=(1, 2),
                           keepdims=True) / count
  scale = (tf.sqrt(variance) + 1e-6) / TARGET_STD
  sigma = tf.broadcast_to(tf.cast(sigma, tf.float32), tf.shape(images)[:1])
  scaled = 0.5 + (images - mean) / scale
  denoised = tf.convert_to_tensor(denoiser(scaled, sigma), tf.float32)
  restored = (denoised - 0.5) * scale + mean
  return lit * restored + (1.0 - lit) * images


def denoise_object(denoiser, obj, lit, sigma, domain="complex",
                   first_sigma_scale=1.0):
  """An object after one prior step: its two real images denoised together.

  Args:
    denoiser: as `denoise_images`.
    obj: complex64 [B, H, W].
    lit: float32 [B, H, W] or [H, W], the region to denoise.
    sigma: float32 scalar or [B].
    domain: "complex" (the real and imaginary parts) or "amplitude_phase".
    first_sigma_scale: the first image (the real part, or the amplitude) is
      denoised at sigma times this, the second at sigma.

  Returns:
    complex64 [B, H, W].
  """
  obj = tf.convert_to_tensor(obj, tf.complex64)
  if domain == "complex":
    first, second = tf.math.real(obj), tf.math.imag(obj)
  elif domain == "amplitude_phase":
    # The phase of a pixel that is exactly 0 (e.g. off the stitched
    # patches) is 0, with a zero gradient: the gradient of angle there is
    # infinite, and infinity times the zero weight of an unlit pixel is NaN.
    first = forward.magnitude(obj)
    nonzero = first > 0
    second = tf.where(nonzero,
                      tf.math.angle(tf.where(nonzero, obj, tf.ones_like(obj))),
                      0.0)
  else:
    raise ValueError(f"domain {domain!r} is not one of {DOMAINS}")
  batch = tf.shape(obj)[0]
  lit = tf.broadcast_to(tf.cast(lit, tf.float32), tf.shape(first))
  sigma = tf.broadcast_to(tf.cast(sigma, tf.float32), [batch])
  # One call for both images of every scan.
  out = denoise_images(denoiser, tf.concat([first, second], 0),
                       tf.concat([lit, lit], 0),
                       tf.concat([sigma * first_sigma_scale, sigma], 0))
  first, second = out[:batch], out[batch:]
  if domain == "complex":
    return tf.complex(first, second)
  return tf.complex(first * tf.cos(second), first * tf.sin(second))
