"""Image-quality metrics for complex object reconstructions: numpy in, floats out.

Two conventions:

- `complex_metrics` (this project's figures): the estimate's constant phase
  offset is removed first (ptychography cannot measure a global phase
  factor), then the amplitude and phase images are compared on a region,
  normally the illuminated region (`illuminated_region`, the package's one
  scored region), with the data range of the true values in that region.
- `paper_metrics` (the raw convention, for comparison with published tables):
  amplitude |O| and phase angle(O) compared as they are, over the whole
  object, with no offset removal and no mask; data range of the true image.

Phase images are compared through the wrapped difference: the estimate's phase
is taken as angle(truth) + angle(estimate * conj(truth)), so a jump of 2*pi
counts as no error.
"""
import numpy as np
from scipy import ndimage
from skimage import metrics as sk_metrics

from ptychonet_tf.physics import forward
from ptychonet_tf.physics import layouts

SSIM_WINDOW = 7  # skimage's default window (win_size=7, uniform filter)
# The region every score of the package is computed on (reconstruct,
# evaluate, the benchmarks, training's held-out metrics): the pixels whose
# summed illumination sum_j |P|^2 reaches this fraction of its maximum
# (`illuminated_region`). Outside it the data barely constrain the object.
REGION_FRACTION = layouts.REGION_FRACTION


def region_name(fraction=REGION_FRACTION):
  """How printed scores name their region, e.g. in reconstruct's lines."""
  return f"illuminated region (sum_j |P|^2 >= {fraction:g} of its maximum)"


def scanned_region(layout, object_shape, erode=0):
  """bool [H, W]: pixels covered by at least one probe window, eroded by `erode` px.

  Args:
    layout: int [N, 4] (top, bottom, left, right).
    object_shape: (H, W).
    erode: pixels removed along the region's border (square structuring
      element), e.g. where only the dim edge of the probe reaches.
  """
  mask = layouts.scanned_mask(layout, object_shape)
  if erode > 0:
    mask = ndimage.binary_erosion(mask, np.ones((3, 3), bool),
                                  iterations=int(erode))
  return mask


# The scored region is the physics' lit region (`layouts.illuminated_region`):
# one definition for the metrics, plug-and-play and the refinement's priors.
illuminated_region = layouts.illuminated_region


def _region(shape, mask):
  if mask is None:
    return np.ones(shape, bool)
  mask = np.asarray(mask, bool)
  if mask.shape != tuple(shape):
    raise ValueError(f"mask has shape {mask.shape}; expected {tuple(shape)}")
  if not mask.any():
    raise ValueError("mask selects no pixels")
  return mask


def phase_offset(estimate, truth, mask=None):
  """The constant phase (rad) that best aligns `estimate` with `truth`.

  theta = angle(sum over the region of truth * conj(estimate)), the least-squares
  optimal global phase factor: |estimate * exp(i theta) - truth| is minimal.

  Args:
    estimate, truth: complex [H, W].
    mask: optional bool [H, W] region.
  """
  estimate, truth = np.asarray(estimate), np.asarray(truth)
  region = _region(truth.shape, mask)
  return float(np.angle(np.sum(truth[region] * np.conj(estimate[region]))))


def remove_phase_offset(estimate, truth, mask=None):
  """`estimate` times the global phase factor that aligns it with `truth`.

  Returns:
    complex128 [H, W].
  """
  theta = phase_offset(estimate, truth, mask)
  return np.asarray(estimate, np.complex128) * np.exp(1j * theta)


def aligned_phase(estimate, truth):
  """The estimate's phase unwrapped against the truth: angle(t) + angle(e conj(t)).

  Both are taken at unit modulus first, a zero pixel as phase 0 (numpy's
  angle(0)): a pixel the estimate leaves at 0 has phase 0, not the truth's
  (e conj(t) = 0 would give it angle(t), so an all-zero estimate would
  score perfect phase).

  Returns:
    float64 [H, W].
  """
  estimate = _unit(estimate)
  truth = _unit(truth)
  return np.angle(truth) + np.angle(estimate * np.conj(truth))


def _unit(values):
  """values / |values| as complex128, 1 where |values| is 0."""
  values = np.asarray(values, np.complex128)
  modulus = np.abs(values)
  return np.where(modulus > 0, values / np.where(modulus > 0, modulus, 1), 1)


def default_range(values):
  """The data range of a true image: max - min, or for an image that is
  constant to 1e-6 of its magnitude (the amplitude of a phase-only object)
  its largest |value|, so errors count relative to the value itself."""
  values = np.asarray(values, np.float64)
  span = float(values.max() - values.min())
  peak = float(np.abs(values).max())
  return span if span > 1e-6 * peak else peak


def psnr(estimate, truth, mask=None, data_range=None):
  """Peak signal-to-noise ratio in dB of a real image over a region.

  PSNR = 10 log10(data_range^2 / MSE), MSE over the region.

  Args:
    estimate, truth: real [H, W].
    mask: optional bool [H, W]; None uses every pixel.
    data_range: peak-to-peak value; None uses `default_range` of `truth`
      in the region (max - min; max |truth| for a constant truth).

  Returns:
    float; inf when the images agree exactly.
  """
  estimate = np.asarray(estimate, np.float64)
  truth = np.asarray(truth, np.float64)
  region = _region(truth.shape, mask)
  if data_range is None:
    data_range = default_range(truth[region])
  mse = float(np.mean((estimate[region] - truth[region]) ** 2))
  if mse == 0.0:
    return float("inf")
  if data_range <= 0:
    raise ValueError("data range is 0 (constant truth); pass data_range")
  return float(10.0 * np.log10(data_range ** 2 / mse))


def ssim(estimate, truth, mask=None, data_range=None):
  """Structural similarity (Wang et al. 2004, 7x7 windows) averaged over a region.

  The SSIM map is computed on the whole image with skimage and averaged over
  the region's pixels whose whole 7x7 window lies inside the region (so
  pixels outside it, e.g. an unscanned border, do not count), or over the
  whole region when none do.

  Args:
    estimate, truth: real [H, W] (at least 7x7).
    mask: optional bool [H, W]; None averages over every pixel.
    data_range: None uses `default_range` of `truth` in the region.

  Returns:
    float in [-1, 1].
  """
  estimate = np.asarray(estimate, np.float64)
  truth = np.asarray(truth, np.float64)
  region = _region(truth.shape, mask)
  if data_range is None:
    data_range = default_range(truth[region])
  if data_range <= 0:
    raise ValueError("data range is 0 (constant truth); pass data_range")
  _, full = sk_metrics.structural_similarity(truth, estimate,
                                             data_range=data_range, full=True)
  if mask is not None:
    inner = ndimage.binary_erosion(region, np.ones((SSIM_WINDOW, SSIM_WINDOW),
                                                   bool), border_value=0)
    if inner.any():
      region = inner
  return float(full[region].mean())


def complex_metrics(estimate, truth, mask=None):
  """PSNR and SSIM of amplitude and phase after removing the constant phase offset.

  Args:
    estimate, truth: complex [H, W].
    mask: optional bool [H, W] region (normally `illuminated_region`); the phase
      offset is fitted and the metrics computed on it.

  Returns:
    dict with float values: amplitude_psnr, phase_psnr (dB), amplitude_ssim,
    phase_ssim, phase_offset (rad, the offset that was removed).
  """
  truth = np.asarray(truth, np.complex128)
  theta = phase_offset(estimate, truth, mask)
  aligned = np.asarray(estimate, np.complex128) * np.exp(1j * theta)
  amplitude, true_amplitude = np.abs(aligned), np.abs(truth)
  phase, true_phase = aligned_phase(aligned, truth), np.angle(truth)
  return dict(amplitude_psnr=psnr(amplitude, true_amplitude, mask),
              phase_psnr=psnr(phase, true_phase, mask),
              amplitude_ssim=ssim(amplitude, true_amplitude, mask),
              phase_ssim=ssim(phase, true_phase, mask),
              phase_offset=theta)


def paper_metrics(estimate, truth):
  """PSNR and SSIM of amplitude and phase in the raw convention.

  The whole object, no phase-offset removal, no mask: |estimate| against
  |truth| and angle(estimate) against angle(truth), each with the data range
  of the true image.

  Args:
    estimate, truth: complex [H, W].

  Returns:
    dict: amplitude_psnr, phase_psnr, amplitude_ssim, phase_ssim.
  """
  estimate = np.asarray(estimate, np.complex128)
  truth = np.asarray(truth, np.complex128)
  amplitude, true_amplitude = np.abs(estimate), np.abs(truth)
  phase, true_phase = np.angle(estimate), np.angle(truth)
  return dict(amplitude_psnr=psnr(amplitude, true_amplitude),
              phase_psnr=psnr(phase, true_phase),
              amplitude_ssim=ssim(amplitude, true_amplitude),
              phase_ssim=ssim(phase, true_phase))


def fourier_error(obj, probe, layout, amplitudes):
  """DM's Fourier error of an object and probe on measured amplitudes:
  sum_j || |F(P O_j)| - A_j ||^2 / sum_j ||A_j||^2 (A_j in the scan file's
  convention, zero frequency at (h//2, w//2)); 0 for a perfect fit."""
  amplitudes = np.asarray(amplitudes, np.float64)
  predicted = forward.diffraction_amplitudes(
      np.asarray(obj, np.complex64), np.asarray(probe, np.complex64),
      layout).numpy()
  return float(np.sum((predicted - amplitudes) ** 2) / np.sum(amplitudes ** 2))


def first_reaching(values, target):
  """The first (1-based) iteration whose value is <= target, or None."""
  hits = np.flatnonzero(np.asarray(values) <= target)
  return int(hits[0]) + 1 if hits.size else None


def fourier_ring_correlation(first, second, ring_width=1):
  """Fourier ring correlation of two images of one size (real or complex).

  FRC(r) = Re sum_{k in ring r} F1(k) conj(F2(k)) /
           sqrt(sum_{ring r} |F1|^2 * sum_{ring r} |F2|^2),
  F the unnormalised DFT (np.fft.fft2), rings of `ring_width` frequency
  bins: ring r holds the frequencies k (cycles per pixel, np.fft.fftfreq
  along each axis) with floor(|k| * M / ring_width) = r, M = min(H, W), up
  to Nyquist (|k| < 0.5); |k| * M = hypot(i M / H, j M / W) for the DFT's
  integer indices (i, j). A ring where either image has no power gets 0.
  The images are used as given: subtract their means and taper a region's
  edge first where that matters.

  Args:
    first, second: [H, W] real or complex.
    ring_width: ring width in frequency bins of the shorter axis.

  Returns:
    (frequencies float64 [R]: each ring's centre in cycles per pixel,
     frc float64 [R]).
  """
  first = np.asarray(first)
  second = np.asarray(second)
  if first.shape != second.shape or first.ndim != 2:
    raise ValueError(f"images have shapes {first.shape} and {second.shape}; "
                     f"expected two [H, W] of one shape")
  height, width = first.shape
  size = min(height, width)
  # |k| * M in bins of the shorter axis, from the integer DFT indices (so a
  # frequency on a ring's edge falls on the same side on every platform).
  ky = np.fft.fftfreq(height, 1.0 / height).round()[:, None] * (size / height)
  kx = np.fft.fftfreq(width, 1.0 / width).round()[None, :] * (size / width)
  rings = size // (2 * ring_width)
  index = np.floor(np.hypot(ky, kx) / ring_width).astype(np.int64)
  inside = index < rings
  index = index[inside]
  f1 = np.fft.fft2(first.astype(np.complex128))[inside]
  f2 = np.fft.fft2(second.astype(np.complex128))[inside]
  cross = np.bincount(index, np.real(f1 * np.conj(f2)), minlength=rings)
  power1 = np.bincount(index, np.abs(f1) ** 2, minlength=rings)
  power2 = np.bincount(index, np.abs(f2) ** 2, minlength=rings)
  denominator = np.sqrt(power1 * power2)
  frc = np.where(denominator > 0, cross / np.where(denominator > 0,
                                                   denominator, 1), 0.0)
  frequencies = (np.arange(rings) + 0.5) * ring_width / size
  return frequencies, frc


def frc_crossing(frequencies, frc, threshold=0.5):
  """The first frequency where the FRC falls below `threshold`, linearly
  interpolated between the rings around it; the last ring's frequency
  when it never does."""
  frc = np.asarray(frc, np.float64)
  below = np.flatnonzero(frc < threshold)
  if not below.size:
    return float(frequencies[-1])
  i = int(below[0])
  if i == 0:
    return float(frequencies[0])
  f0, f1 = frequencies[i - 1], frequencies[i]
  v0, v1 = frc[i - 1], frc[i]
  return float(f0 + (v0 - threshold) / (v0 - v1) * (f1 - f0))


def register(estimate, reference, mask=None, max_shift=4, precision=0.02):
  """`estimate` shifted (sub-pixel) and phase-rotated onto `reference`.

  The shift s maximises |sum over the region of u_e(x - s) conj(u_r(x))|,
  u = O / |O| (phase only; the estimate moved by a Fourier shift, which is
  periodic, before it is normalised): that
  is the shift whose best global phase factor leaves the least squared
  phase-factor difference in the region, sum |u_e e^{i theta} - u_r|^2 =
  2 M - 2 |sum u_e conj(u_r)|. It is searched on a grid of whole pixels
  within +-`max_shift`, then on grids ten times finer around the best
  point down to `precision` pixel. The estimate, moved by s, is then
  multiplied by the global phase factor that aligns it with the reference
  on the region (`remove_phase_offset`).

  Args:
    estimate, reference: complex [H, W].
    mask: optional bool [H, W] region; None uses every pixel.
    max_shift: the largest whole-pixel shift searched along each axis.
    precision: the finest grid step in pixels.

  Returns:
    (complex128 [H, W] the aligned estimate, (dy, dx) the shift applied).
  """
  estimate = np.asarray(estimate, np.complex128)
  reference = np.asarray(reference, np.complex128)
  region = _region(reference.shape, mask)
  spectrum = np.fft.fft2(estimate)
  target = np.conj(_unit(reference))[region]
  height, width = reference.shape
  ky = np.fft.fftfreq(height)[:, None]
  kx = np.fft.fftfreq(width)[None, :]

  def moved(array_spectrum, shift):
    ramp = np.exp(-2j * np.pi * (ky * shift[0] + kx * shift[1]))
    return np.fft.ifft2(array_spectrum * ramp)

  def score(shift):
    return abs(np.sum(_unit(moved(spectrum, shift)[region]) * target))

  best, step, span = np.zeros(2), 1.0, float(max_shift)
  while True:
    grid = np.arange(-span, span + step / 2, step)
    candidates = [best + (dy, dx) for dy in grid for dx in grid]
    best = max(candidates, key=score)
    if step <= precision * (1 + 1e-9):
      break
    span, step = step, max(step / 10, precision)
  aligned = moved(spectrum, best)
  return (remove_phase_offset(aligned, reference, region),
          (float(best[0]), float(best[1])))


def phase_surface_basis(region, order=1):
  """The low-order phase surface's terms on `region`'s pixels.

  Args:
    region: bool [H, W] (at least order + 1 rows and columns).
    order: 0 (a constant), 1 (a + b y + c x) or 2 (also y^2, y x, x^2).

  Returns:
    (float64 [M, K] the terms at the region's M pixels (row-major order),
     the same terms on the whole [H, W] grid as [H, W, K]); y and x are
     pixels from the region's centroid, so the linear coefficients are in
     rad per pixel; the quadratic terms are divided by the region's
     size L = max(H, W) (coefficients in rad per pixel over L).
  """
  if order not in (0, 1, 2):
    raise ValueError(f"order={order}; expected 0, 1 or 2")
  height, width = region.shape
  rows, cols = np.nonzero(region)
  y = np.arange(height)[:, None] - rows.mean() + np.zeros((1, width))
  x = np.arange(width)[None, :] - cols.mean() + np.zeros((height, 1))
  terms = [np.ones((height, width))]
  if order >= 1:
    terms += [y, x]
  if order >= 2:
    size = float(max(height, width))
    terms += [y * y / size, y * x / size, x * x / size]
  grid = np.stack(terms, -1)
  return grid[region], grid


def _newton_surface(basis, weights, difference, coefficients, iterations):
  """Newton steps on sum w (1 - cos(d - B c)) from `coefficients` (Gauss-
  Newton, least squares on the wrapped residual, where the curvature is
  not positive); weights sum to 1."""
  for _ in range(iterations):
    residual = np.angle(np.exp(1j * (difference - basis @ coefficients)))
    gradient = basis.T @ (weights * np.sin(residual))
    hessian = basis.T @ (basis * (weights * np.cos(residual))[:, None])
    if np.linalg.eigvalsh(hessian).min() <= 1e-12 * abs(np.trace(hessian)):
      hessian = basis.T @ (basis * weights[:, None])
      gradient = basis.T @ (weights * residual)
    step = np.linalg.lstsq(hessian, gradient, rcond=None)[0]
    coefficients = coefficients + step
    if np.abs(step).max() < 1e-12:
      break
  return coefficients


def _plane_start(region, weights, difference):
  """(a, b, c) of the plane wave exp(i (a + b y + c x)) closest to
  w exp(i d) on the region: the peak of its DFT zero-padded 4x (a quarter
  of a bin), y and x from the region's centroid."""
  rows, cols = np.nonzero(region)
  height, width = region.shape
  field = np.zeros((4 * height, 4 * width), np.complex128)
  field[rows, cols] = weights * np.exp(1j * difference)
  power = np.abs(np.fft.fft2(field))
  i, j = np.unravel_index(np.argmax(power), power.shape)
  # np.fft.fft2 sums exp(-2 pi i k n / N): its peak k is exp(+i 2 pi k n / N).
  b = 2 * np.pi * np.fft.fftfreq(4 * height)[i]
  c = 2 * np.pi * np.fft.fftfreq(4 * width)[j]
  a = np.angle(np.sum(weights * np.exp(1j * (
      difference - b * (rows - rows.mean()) - c * (cols - cols.mean())))))
  return np.array([a, b, c])


def _weighted_difference(estimate, reference, region):
  """(weights w = |O_e| |O_r| / their sum, d = angle(O_r conj(O_e)), the
  sum of |O_e| |O_r|) at the region's pixels."""
  product = (reference * np.conj(estimate))[region]
  weights = np.abs(product)
  total = float(weights.sum())
  if not total > 0:
    raise ValueError("estimate and reference are zero on the whole region")
  return weights / total, np.angle(product), total


def fit_phase_surface(estimate, reference, mask=None, order=1,
                      iterations=50, start=None):
  """The low-order phase surface p(y, x) that best aligns `estimate` with
  `reference`: the minimiser of

    sum over the region of w |u_r - u_e exp(i p)|^2 = 2 sum w (1 - cos(d - p)),

  u = O / |O|, d = angle(u_r conj(u_e)) the wrapped phase difference,
  weights w = |O_e| |O_r| (the phase of a dark pixel counts less; with
  them this is the phase part of the complex least squares
  sum |O_r - c O_e exp(i p)|^2). The wrapped difference is never
  unwrapped: the linear terms start at the peak of the zero-padded DFT
  of w exp(i d) (the best plane wave on a quarter-bin grid), then Newton
  steps on the cosine objective (Gauss-Newton, i.e. weighted least
  squares on the wrapped residual, where its curvature is not positive)
  refine every term.

  Args:
    estimate, reference: complex [H, W].
    mask: optional bool [H, W] region; None uses every pixel.
    order: 0, 1 or 2 (`phase_surface_basis`).
    iterations: the most Newton steps.
    start: optional float [K] coefficients to start from instead.

  Returns:
    (float64 [H, W] the surface on the whole grid, float64 [K] its
     coefficients in `phase_surface_basis`'s terms).
  """
  estimate = np.asarray(estimate, np.complex128)
  reference = np.asarray(reference, np.complex128)
  region = _region(reference.shape, mask)
  basis, grid = phase_surface_basis(region, order)
  weights, difference, _ = _weighted_difference(estimate, reference, region)
  if start is not None:
    coefficients = np.asarray(start, np.float64).copy()
  else:
    coefficients = np.zeros(basis.shape[1])
    plane = _plane_start(region, weights, difference)
    if order == 0:
      coefficients[0] = np.angle(np.sum(weights * np.exp(1j * difference)))
    else:
      coefficients[:3] = plane
  coefficients = _newton_surface(basis, weights, difference, coefficients,
                                 iterations)
  return grid @ coefficients, coefficients


def amplitude_scale(estimate, reference, mask=None):
  """The scalar c minimising sum over the region (c |O_e| - |O_r|)^2:
  sum |O_e| |O_r| / sum |O_e|^2 (1 where the estimate is 0 there)."""
  region = _region(np.shape(reference), mask)
  e = np.abs(np.asarray(estimate))[region].astype(np.float64)
  r = np.abs(np.asarray(reference))[region].astype(np.float64)
  power = float(np.sum(e * e))
  return float(np.sum(e * r) / power) if power > 0 else 1.0


def register_blind(estimate, reference, mask=None, order=1, max_shift=4,
                   precision=0.02, newton_steps=3):
  """`estimate` aligned onto `reference` up to the ambiguities of blind
  ptychography: a shift, a low-order phase surface and an amplitude scale.

  A reconstruction that refines its probe is determined by its data only
  up to these: (1) a translation of the object (with the probe moved the
  other way, i.e. an offset of all positions); (2) a linear phase ramp
  exp(i (b y + c x)) in the object, traded for a shift of the probe's
  spectrum (a tilt of the illumination; the far-field patterns shift by a
  fraction of a pixel, which the refinement absorbs), and a constant
  phase a (a global phase factor moved into the probe); (3) a constant
  scale c of the object traded for 1/c in the probe. Two such
  reconstructions of one scan can only be compared after removing all
  three. Order 2 also removes a quadratic phase surface: not an exact
  ambiguity, but the slowly varying phase background that iterative
  solvers leave unconverged (the lowest spatial frequencies converge
  last).

  The shift s maximises the normalised complex correlation with the best
  phase surface for that shift,

    max_p Re sum_region O_e(x - s) exp(i p) conj(O_r) / ||O_e(x - s)||

  (||.|| over the region: the shift that leaves the least
  sum |O_r - k O_e(x - s) exp(i p)|^2 for the best scalar k; the estimate
  moved by a Fourier shift, which is periodic; p fitted as in
  `fit_phase_surface`, from the surface at the previous best shift,
  `newton_steps` steps per candidate), so a shift is never mistaken for
  the ramp it resembles on a smooth phase. It is searched on a grid of
  whole pixels within +-`max_shift`, then on grids ten times finer
  around the best down to `precision` pixel. The aligned estimate is
  c O_e(x - s) exp(i p), p refitted to convergence at s and c =
  `amplitude_scale` on the region.

  Args:
    estimate, reference: complex [H, W].
    mask: optional bool [H, W] region; None uses every pixel.
    order: the phase surface's order (0, 1 or 2).
    max_shift: the largest whole-pixel shift searched along each axis.
    precision: the finest grid step in pixels.
    newton_steps: the surface's Newton steps per candidate shift.

  Returns:
    (complex128 [H, W] the aligned estimate, dict: shift (dy, dx) px,
     surface float64 [K] coefficients (`phase_surface_basis`: a rad, then
     b, c rad per pixel, ...), scale c).
  """
  estimate = np.asarray(estimate, np.complex128)
  reference = np.asarray(reference, np.complex128)
  region = _region(reference.shape, mask)
  basis, _ = phase_surface_basis(region, order)
  spectrum = np.fft.fft2(estimate)
  height, width = reference.shape
  ky = np.fft.fftfreq(height)[:, None]
  kx = np.fft.fftfreq(width)[None, :]

  def moved(shift):
    ramp = np.exp(-2j * np.pi * (ky * shift[0] + kx * shift[1]))
    return np.fft.ifft2(spectrum * ramp)

  _, start = fit_phase_surface(estimate, reference, region, order)

  def score(shift):
    candidate = moved(shift)
    weights, difference, total = _weighted_difference(candidate, reference,
                                                      region)
    fitted = _newton_surface(basis, weights, difference, start,
                             newton_steps)
    correlation = total * float(np.sum(weights * np.cos(
        difference - basis @ fitted)))
    norm = np.sqrt(np.sum(np.abs(candidate[region]) ** 2))
    return correlation / norm, fitted

  best, step, span = np.zeros(2), 1.0, float(max_shift)
  while True:
    grid = np.arange(-span, span + step / 2, step)
    scored = [(score(best + (dy, dx)), best + (dy, dx))
              for dy in grid for dx in grid]
    (_, start), best = max(scored, key=lambda item: item[0][0])
    if step <= precision * (1 + 1e-9):
      break
    span, step = step, max(step / 10, precision)
  shifted = moved(best)
  surface, coefficients = fit_phase_surface(shifted, reference, region,
                                            order, start=start)
  aligned = shifted * np.exp(1j * surface)
  scale = amplitude_scale(aligned, reference, region)
  return aligned * scale, dict(shift=(float(best[0]), float(best[1])),
                               surface=coefficients, scale=scale)
