"""Physics: probe, scan layouts, the window operator, far-field forward model, objects, geometry, simulator."""
