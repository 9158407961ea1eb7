"""Small shared utilities: user errors and atomic file writes."""
