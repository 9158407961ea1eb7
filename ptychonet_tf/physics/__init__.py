"""Physics: probe, scan layouts, objects, far-field forward model, extract/stitch."""
