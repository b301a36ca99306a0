"""Hyperparameter presets applied by ``--use-optimized``: TF1's own tuned values (``model.py`` of the tutorial)."""

from __future__ import annotations

#: TF1 ``OPTIMIZED_PARAMS`` (MovieLens ratings) and ``OPTIMIZED_PARAMS_WEB`` (GA web views).
OPTIMIZED = {
    "ratings": {"latent_factors": 34, "regularization": 9.83, "unobs_weight": 0.001, "feature_wt_factor": 189.8},
    "web_views": {"latent_factors": 30, "regularization": 7.27, "unobs_weight": 0.01, "feature_wt_exp": 5.05},
}
