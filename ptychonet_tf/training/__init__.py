"""Training of PtychoNet: the task (model, optimizers, steps), the loop, the run directory's rules, warm starts, config, distribution strategies, held-out evaluation."""
