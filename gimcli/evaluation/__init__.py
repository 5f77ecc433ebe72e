"""Held-out evaluation: metrics, baselines, splits, and recovery of known truth."""
