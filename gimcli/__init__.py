"""gim: Generative Intervention Models for single-cell perturbation screens."""

__version__ = "0.1.0"

# Bumped when model.json / model.pt change incompatibly; loaders refuse other majors.
MODEL_FORMAT_VERSION = 2
