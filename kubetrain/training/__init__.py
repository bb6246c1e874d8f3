"""Training: the model catalog and the parallel fit + cross-validation engine."""
