"""Iterative phase-retrieval baselines: difference map (DM), ePIE and LSQML.

All take diffraction amplitudes in the detector convention of
`physics.forward` (float32 [N, h, w] or a batch [B, N, h, w], zero frequency at
(h//2, w//2)), a probe complex64 [h, w], a layout int32 [N, 4] and the object
shape (H, W), and return a `common.Reconstruction` (also `dm.Reconstruction`).
`common` holds what they share; `physics.windows` their window operator.
"""
