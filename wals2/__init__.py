"""wals2: TF1's weighted alternating least squares (contrib ``WALSModel``) for TensorFlow 2 and Keras 3.

Layers, bottom up: ``config`` and ``weights`` (hyperparameters, TF1 item weights) -> ``data`` (validated
ratings, id maps, the split) -> ``layout`` and ``solver`` (the exact half-sweep, pure tensors) -> ``modes``
(one object per mode), ``scoring``, ``collectives`` and ``engine`` (one worker's blocks, the sweep, the
objective), ``sharding`` (the data of several workers), ``metrics`` and ``foldin`` (ranking metrics, new users'
factors) -> ``recommender`` and ``partial_fit`` (implicit's recommend / similar / partial-fit calls on the
model's state) and ``callbacks`` (held-out ranking logs) -> ``model`` (the Keras model) -> ``export`` (the
serving SavedModel). Entry points (``trainer``, ``tuning``, ``pipeline``) import from here, never the other
way round.
"""

import importlib

#: Public name -> the module that defines it. They are imported on first use (PEP 562), so that light modules
#: (``wals2.config``, ``wals2.options``) can be imported, for a command line's ``--help``, without TensorFlow.
_EXPORTS = {
    "LINEAR_RATINGS": "wals2.config",
    "LOG_RATINGS": "wals2.config",
    "WALSConfig": "wals2.config",
    "Ratings": "wals2.data",
    "RatingsError": "wals2.data",
    "load_bundled": "wals2.data",
    "read_ratings": "wals2.data",
    "export_saved_model": "wals2.export",
    "fold_in": "wals2.foldin",
    "NonFiniteFactorsError": "wals2.model",
    "WALSModel": "wals2.model",
    "half_sweep": "wals2.solver",
}

__all__ = sorted(_EXPORTS)

__version__ = "0.1.0"


def __getattr__(name: str):
    """``wals2.WALSModel`` and the other public names, imported from their module on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'wals2' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
