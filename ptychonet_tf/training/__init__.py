"""Training of PtychoNet: config, distribution strategies, the custom loop, held-out evaluation, run directories."""
