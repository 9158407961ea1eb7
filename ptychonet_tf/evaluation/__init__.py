"""Evaluation: metrics, the reconstruction methods compared, tables and figures."""
