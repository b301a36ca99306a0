"""wals2: TF1's weighted alternating least squares (contrib ``WALSModel``) for TensorFlow 2 and Keras 3.

Layers, bottom up: ``config``, ``weights`` and ``threads`` (hyperparameters, TF1 item weights, the CPU thread
count) -> ``data`` (validated ratings, id maps, the split) -> ``layout`` and ``solver`` (the exact half-sweep, pure
tensors) -> ``modes`` (one object per mode), ``scoring``, ``collectives`` and ``engine`` (one worker's blocks, the
sweep, the objective), ``sharding`` (the data of several workers), ``metrics`` and ``foldin`` (ranking metrics, new
users' factors) -> ``recommender`` and ``partial_fit`` (implicit's recommend / similar / partial-fit calls on the
model's state) and ``callbacks`` (held-out ranking logs) -> ``model`` (the Keras model) -> ``export`` (the
serving SavedModel). Entry points (``trainer``, ``tuning``, ``pipeline``) import from here, never the other
way round.
"""

import importlib
import importlib.abc
import importlib.util
import sys

#: Public name -> the module that defines it. They are imported on first use (PEP 562), so that light modules
#: (``wals2.config``, ``wals2.options``, ``wals2.threads``) can be imported, for a command line's ``--help`` or
#: before TensorFlow's import, without TensorFlow.
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


# ------------------------------------------------------------------------------------- Keras registration
# ``keras.models.load_model("m.keras")`` finds a class by its registered name ("wals2>WALSModel"), which
# ``wals2.model`` registers when it is imported; ``import wals2`` imports neither it nor Keras (nor TensorFlow).
# So the name is registered, as soon as Keras is imported (or now, if it already is), to a stand-in whose
# ``from_config`` imports ``wals2.model``; that import then registers the class itself in its place.
_REGISTERED_NAME = "wals2>WALSModel"


class _WALSModelByName:
    """Keras' entry for "wals2>WALSModel" until ``wals2.model`` is imported: builds the real class."""

    @classmethod
    def from_config(cls, config):
        from wals2.model import WALSModel

        return WALSModel.from_config(config)


def _register_with_keras() -> None:
    objects = sys.modules["keras"].saving.get_custom_objects()
    objects.setdefault(_REGISTERED_NAME, _WALSModelByName)


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    """Finds the ``keras`` package with the other finders, and registers the name once it has been executed.

    It stays in ``sys.meta_path`` until an import of Keras succeeds: TensorFlow's own import tries Keras first
    while TensorFlow is half initialised, and that attempt fails.
    """

    def __init__(self):
        self._finding = False

    def find_spec(self, name, path=None, target=None):
        if name != "keras" or self._finding:
            return None
        self._finding = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self._finding = False
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_register(module):
            exec_module(module)
            _register_with_keras()
            if self in sys.meta_path:
                sys.meta_path.remove(self)

        spec.loader.exec_module = exec_and_register
        return spec


if "keras" in sys.modules:
    _register_with_keras()
elif not any(isinstance(finder, _AfterKerasImport) for finder in sys.meta_path):
    sys.meta_path.insert(0, _AfterKerasImport())
