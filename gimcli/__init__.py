"""gim: Generative Intervention Models for single-cell perturbation screens.

The public API (docs/api.md), in the style of scanpy and scvi-tools:

    import gimcli as gim
    run = gim.train(adata, covariate_keys="cell_type", holdout_combinations="all")
    pred = gim.predict(run, conditions="KLF1+MAP2K6")        # AnnData
    table = gim.explain(run, top_targets=5)                  # DataFrame
    scores = gim.evaluate("run/", test_adata)                # EvalResult
    screen = gim.simulate(n_genes=50)                        # AnnData
    run = gim.GimRun.load("run/")

The functions live in gimcli.api and are loaded on first use: the package root imports nothing
at import time (the package's own modules never import it), so that `gim --help` stays instant
and the API adds no import circles (docs/design.md, "Layout").
"""

from gimcli._version import __version__

_API = ("train", "predict", "explain", "evaluate", "simulate", "GimRun", "EvalResult")
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from gimcli import api

        return getattr(api, name)
    raise AttributeError(f"module 'gimcli' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
