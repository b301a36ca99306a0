"""wals2: TF1's weighted alternating least squares (contrib ``WALSModel``) for TensorFlow 2 and Keras 3.

Layers, bottom up: ``config`` and ``weights`` (hyperparameters, TF1 item weights) -> ``data`` (validated
ratings, id maps, the split) -> ``layout`` and ``solver`` (the exact half-sweep, pure tensors) -> ``modes``
(one object per mode), ``scoring``, ``collectives`` and ``engine`` (one worker's blocks, the sweep, the
objective), ``sharding`` (the data of several workers) -> ``model`` (the Keras model) -> ``foldin`` and
``export`` (new users, the serving SavedModel). Entry points (``trainer``, ``tuning``, ``pipeline``) import from
here, never the other way round.
"""

from wals2.config import LINEAR_RATINGS, LOG_RATINGS, WALSConfig
from wals2.data import Ratings, RatingsError, load_bundled, read_ratings
from wals2.export import export_saved_model
from wals2.foldin import fold_in
from wals2.model import NonFiniteFactorsError, WALSModel
from wals2.solver import half_sweep

__all__ = [
    "LINEAR_RATINGS",
    "LOG_RATINGS",
    "NonFiniteFactorsError",
    "Ratings",
    "RatingsError",
    "WALSConfig",
    "WALSModel",
    "export_saved_model",
    "fold_in",
    "half_sweep",
    "load_bundled",
    "read_ratings",
]

__version__ = "0.1.0"
