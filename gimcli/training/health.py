"""Health checks of a fit: the signs that a trained model is not to be believed (issue 10).

Each check gives one warning record {"check", "message"} (one line); `gim train` logs them on
stderr, puts them in its --json summary, in model.json (diagnostics.warnings) and at the top of
report.html. They warn; they never fail a run.
"""

from __future__ import annotations

import math

import numpy as np

# The validation objective "well above its best": more than this share of |best| (and of one nat)
# above it at a later evaluation.
VAL_RISE = 0.5


def _warn(check: str, message: str) -> dict:
    return {"check": check, "message": message}


def health_warnings(
    history: list[dict],
    *,
    best_step: int,
    best_val: float,
    spectral_radius: float | None,
    nograph_best_val: float | None = None,
) -> list[dict]:
    """Warnings about a fit from its history, its best validation objective, the spectral radius
    of B and the best validation objective of the B = 0 refit (when there is one)."""
    out = []
    vals = [(r["step"], r.get("val_nll"), r.get("loss")) for r in history]
    bad = [s for s, v, loss in vals if not _finite(loss) or (v is not None and _nan(v))]
    if bad or not _finite(best_val):
        out.append(
            _warn(
                "diverged",
                f"the objective was not finite at {len(bad)} evaluation(s) (first at step "
                f"{bad[0] if bad else best_step}); the fit diverged: lower --lr",
            )
        )
    finite = [(s, v) for s, v, _ in vals if _finite(v)]
    if finite and _finite(best_val):
        peak_step, peak = max(finite, key=lambda sv: sv[1])
        rise = peak - best_val
        if rise > VAL_RISE * max(abs(best_val), 1.0) and peak_step != best_step:
            out.append(
                _warn(
                    "validation_rising",
                    f"validation NLL reached {peak:.4g} at step {peak_step}, well above its best "
                    f"{best_val:.4g} (step {best_step}, the model kept): the fit over- or "
                    "under-shot there",
                )
            )
    if spectral_radius is not None and _finite(spectral_radius) and spectral_radius >= 1:
        out.append(
            _warn(
                "unstable_graph",
                f"spectral radius of B is {spectral_radius:.3g} >= 1: B cannot be read as a "
                "stable feedback system (its edges are not effects that settle)",
            )
        )
    if nograph_best_val is not None and _finite(nograph_best_val) and _finite(best_val):
        if nograph_best_val < best_val:
            out.append(
                _warn(
                    "graph_not_helping",
                    f"the B = 0 refit fits validation better than the full model "
                    f"({nograph_best_val:.4g} < {best_val:.4g} NLL): the learned graph is not "
                    "supported by the data",
                )
            )
    return out


def _finite(x) -> bool:
    return x is not None and isinstance(x, int | float | np.floating) and math.isfinite(x)


def _nan(x) -> bool:
    return isinstance(x, float | np.floating) and math.isnan(x)
