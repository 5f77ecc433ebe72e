"""gim: Generative Intervention Models for single-cell perturbation screens.

Nothing is imported here (the package's own modules never import it), so that `gim --help`
stays instant and the public API can be added without import circles (docs/design.md, "Layout").
"""

from gimcli._version import __version__

__all__ = ["__version__"]
