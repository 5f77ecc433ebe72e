"""Training: batches of contexts and cells, the optimisation loop, and the end-to-end fit."""
