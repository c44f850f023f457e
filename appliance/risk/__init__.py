"""Risk scores: NEWS2 (a published chart, computed exactly) and the learned tabular models."""
