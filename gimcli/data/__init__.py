"""Reading, validating, preprocessing and featurising perturbation screens."""
