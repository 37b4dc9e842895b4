"""Proxy -> LLM cascade with a stated statistical guarantee (SUPG, Kang et al. VLDB 2020; BARGAIN,
Zeighami et al. 2025): calibrated score bands per sub-task (``calibrate``), the proxy's span
confidence (``confidence``) and the routing executor (``executor``). No Dagster."""

from falconer_assets.cascade.calibrate import (
    ABOVE_ANY_SCORE,
    KINDS,
    Band,
    QualityTarget,
    achieved,
    as_target,
    band_share,
    binomial_lower_bound,
    calibrate,
    cross_fitted,
    repetitions,
    target_met,
)
from falconer_assets.cascade.confidence import span_confidence
from falconer_assets.cascade.executor import CascadePrimitives

__all__ = [
    "ABOVE_ANY_SCORE",
    "KINDS",
    "Band",
    "CascadePrimitives",
    "QualityTarget",
    "achieved",
    "as_target",
    "band_share",
    "binomial_lower_bound",
    "calibrate",
    "cross_fitted",
    "repetitions",
    "span_confidence",
    "target_met",
]
