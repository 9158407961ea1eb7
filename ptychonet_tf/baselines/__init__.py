"""Iterative reconstructors: difference map (DM), ePIE and LSQML.

Each is a `base.IterativeReconstructor` that keeps only its update rule and
calls the ptychography operator (`physics.operator.Ptychography`) for the
physics; `ptychonet_tf.reconstructors` registers them by name.
"""
