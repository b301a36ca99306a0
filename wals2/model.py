"""``WALSModel``: weighted ALS as a Keras 3 model whose ``fit`` runs closed-form sweeps instead of gradients."""

from __future__ import annotations

import functools
import inspect
import logging
from typing import Any

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from wals2 import metrics as ranking
from wals2 import partial_fit, scoring, validate
from wals2 import weights as weights_lib
from wals2.callbacks import HeldoutRanking
from wals2.config import WALSConfig
from wals2.data import Ratings, repeated_pairs
from wals2.engine import Entries, Partition, SweepEngine
from wals2.modes import mode_of
from wals2.recommender import Recommender

logger = logging.getLogger(__name__)


class NonFiniteFactorsError(FloatingPointError):
    """A sweep produced NaN or infinite factors (or a k x k system could not be factorised)."""


#: The logs of every ``fit`` / ``evaluate`` (``val_<name>`` as ``<name>``); their directions are the registry's.
LOGS = ("rmse", "loss")
#: The ranking logs of ``fit(ranking_k=k)`` and ``evaluate(ranking_k=k)``, ``<name>@<k>``; higher is better.
RANKING_LOGS = ("ndcg", "precision")
#: The state variables, in the order of ``weights``.
_STATE_NAMES = ("user_factors", "item_factors", "user_bias", "item_bias", "global_mean", "rating_range")
#: Pairs per batch of ``predict`` (Keras' default of 32 makes ``predict`` of 10k pairs 20-30x slower).
PREDICT_BATCH_SIZE = 4096
#: The default bound of the rows one ``partial_fit_*`` call may add (``max_new_users`` / ``max_new_items``).
MAX_NEW_ROWS = 100_000


class _Direction(keras.metrics.Metric):
    """A stateless metric that only names a log and its direction ("down": lower is better), never updated or read.

    Keras' ``mode="auto"`` callbacks (``EarlyStopping``, ``ModelCheckpoint``) take the
    direction of ``monitor`` from the ``_direction`` of the model's metric of that name.
    """

    def __init__(self, name: str, direction: str):
        super().__init__(name=name)
        self._direction = direction

    def update_state(self, *args, **kwargs):
        raise NotImplementedError(f"The {self.name!r} log is computed by the sweep engine, not by a metric.")

    def result(self):
        raise NotImplementedError(f"The {self.name!r} log is computed by the sweep engine, not by a metric.")


@functools.cache
def _log_directions(ranking_ks: tuple[int, ...] = ()) -> list:
    """[a container of the ``_Direction`` of every log] in the class Keras' callbacks search (Keras has no public
    name for it), or [] where this Keras lacks it (callbacks then need an explicit ``mode``). It holds no state,
    and its ``result`` is empty, so Keras keeps the logs the train and test steps return. Every ranking metric
    (``metrics.METRICS``) at each k of ``ranking_ks`` is among them (increasing)."""
    try:
        from keras.src.trainers.compile_utils import MetricsList
    except ImportError:
        return []

    class LogDirections(MetricsList):
        def result(self):
            return {}

    names = list(LOGS) + [f"{name}@{k}" for k in ranking_ks for name in ranking.METRICS]
    keras_direction = {"min": "down", "max": "up"}
    metrics = [_Direction(name, keras_direction[ranking.direction(name)]) for name in names]
    return [LogDirections(metrics, "log_directions")]


@keras.saving.register_keras_serializable(package="wals2")
class WALSModel(Recommender, keras.Model):
    """Matrix factorisation A ~ U V' trained by TF1's weighted alternating least squares.

    ``fit(train, epochs=N)`` runs N sweeps; each sweep solves every user row exactly, then every item row
    (``engine.SweepEngine``), with no gradients. The factors are non-trainable variables updated with ``assign``.
    The same model trains on several workers: create and compile it under a ``MultiWorkerMirroredStrategy``
    scope and give each worker its ``engine.Partition`` of the training matrix.

    Example:
        >>> model = WALSModel(num_users, num_items, latent_factors=10)
        >>> model.compile(jit_compile=False)
        >>> model.fit(train, epochs=20, validation_data=test)
        >>> items, scores = model.recommend([0, 1], k=10)
        >>> neighbours, cosine = model.similar_items([0], k=10)
        >>> model.partial_fit_users([0], user_items)  # user 0's row [1, num_items] solved again against fixed V

    Args:
        num_users: m, the number of user rows.
        num_items: n, the number of item columns.
        config: a ``WALSConfig``; keyword arguments named like its fields override it.
        **kwargs: ``WALSConfig`` fields, or Keras ``Model`` arguments such as ``name``.
    """

    def __init__(self, num_users: int, num_items: int, config: WALSConfig | dict | None = None, **kwargs: Any):
        defer_state = kwargs.pop("_defer_state", False)
        fields = set(WALSConfig.__dataclass_fields__)
        overrides = {key: kwargs.pop(key) for key in list(kwargs) if key in fields}
        unknown = sorted(set(kwargs) - _KERAS_MODEL_ARGUMENTS)
        if unknown:
            aliases = {key: _ALIASES[key] for key in unknown if key in _ALIASES}
            hint = "".join(f" `{key}` is `{field}` here." for key, field in aliases.items())
            raise TypeError(
                f"WALSModel got unknown keyword arguments {unknown}.{hint} They should be WALSConfig fields "
                f"({', '.join(sorted(fields))}) or Keras Model arguments ({', '.join(sorted(_KERAS_MODEL_ARGUMENTS))})."
            )
        policy = keras.dtype_policies.get(kwargs["dtype"]) if kwargs.get("dtype") is not None else None
        if policy is not None and (policy.compute_dtype, policy.variable_dtype) != ("float32", "float32"):
            raise ValueError(
                f"`dtype` should be float32 (the sweep solves in float32) or None. Received: dtype={kwargs['dtype']!r}"
            )
        super().__init__(**kwargs)
        for name, value in (("num_users", num_users), ("num_items", num_items)):
            validate.integer(name, value)
        if isinstance(config, dict):
            config = WALSConfig.from_dict(config)
        self.config = (config or WALSConfig()).replace(**overrides)
        self.mode = mode_of(self.config)
        self.num_users, self.num_items = int(num_users), int(num_items)
        self._deferred_state = True
        self._squared_error = keras.metrics.Mean(name="squared_error")
        self.engine: SweepEngine | None = None
        self._heldout: Entries | None = None
        self._seen = None
        self._vocabularies = None
        self._fitting = False
        self._ranking_ks: tuple[int, ...] = ()  # the ks of the last fit's ranking logs (its HeldoutRankings)
        self._traced_for = _TracedFor(None, None)  # what the traced train_function captured
        if not defer_state:
            self._materialize_state()
        self.built = True

    # ----------------------------------------------------------------------------------------------- state
    def _state_shapes(self, num_users: int, num_items: int) -> dict[str, tuple[int, ...]]:
        """The shape of each state variable for num_users x num_items, in the order of ``weights``."""
        k = self.config.latent_factors
        return {
            "user_factors": (num_users, k),
            "item_factors": (num_items, k),
            # The biases, the mean and the clipping range of the predictions; zeros / unbounded without biases.
            "user_bias": (num_users,),
            "item_bias": (num_items,),
            "global_mean": (),
            "rating_range": (2,),
        }

    def _materialize_state(self) -> None:
        """Creates the state of a new model: drawn factors, zero biases and mean, an unbounded rating range."""
        self._create_state(self.num_users, self.num_items)
        self.rating_range.assign([-np.inf, np.inf])
        self.initialize_factors()

    def __getattr__(self, name: str):
        # Reached only for attributes not set: the state of a model from ``from_config`` that no weights file
        # filled (``keras.models.clone_model``, ``model_from_json``) is created on first use.
        if name in _STATE_NAMES and self.__dict__.get("_deferred_state"):
            self._materialize_state()
            return getattr(self, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def weights(self):
        # A model from ``from_config`` outside ``load_model`` (``set_weights``, ``get_weights``) has its state.
        if self.__dict__.get("_deferred_state"):
            self._materialize_state()
        return super().weights

    def save_own_variables(self, store) -> None:
        if self.__dict__.get("_deferred_state"):
            self._materialize_state()
        super().save_own_variables(store)

    def load_own_variables(self, store) -> None:
        """Keras' ``load_model``: the state from the weights file, its shapes checked against the config first.

        Raises:
            ValueError: the file's variables are not the six of this config's shapes (nothing is allocated).
        """
        shapes = self._state_shapes(self.num_users, self.num_items)
        if len(store.keys()) != len(shapes):
            raise ValueError(f"The weights file holds {len(store.keys())} variables; a WALSModel has {len(shapes)}.")
        values = [store[str(i)] for i in range(len(shapes))]
        for (name, shape), value in zip(shapes.items(), values):
            if tuple(value.shape) != shape:
                raise ValueError(
                    f"The weights file's `{name}` has shape {tuple(value.shape)}; the config (num_users="
                    f"{self.num_users}, num_items={self.num_items}, latent_factors={self.config.latent_factors}) "
                    f"needs {shape}. The file's config.json and weights disagree."
                )
        if self.__dict__.get("_deferred_state"):
            self._create_state(self.num_users, self.num_items)
        for variable, value in zip(self.weights, values):
            variable.assign(value)

    def _create_state(self, num_users: int, num_items: int) -> None:
        """Creates the state variables (zeros) for num_users x num_items, in the order of ``weights``."""
        self._deferred_state = False  # first: Keras' ``__setattr__`` reads the attribute it sets
        for name, shape in self._state_shapes(num_users, num_items).items():
            # Replicated state assigned in the replica context (equal on every worker after each sweep).
            variable = self.add_weight(
                shape=shape, initializer="zeros", trainable=False, name=name, aggregation="only_first_replica"
            )
            setattr(self, name, variable)
        self.num_users, self.num_items = int(num_users), int(num_items)

    def _resize(self, num_users: int, num_items: int) -> None:
        """Grows the model to num_users x num_items: the new rows' factors and biases are 0, the rest is kept.

        The variables are created again (a variable's shape is fixed), in the same order, so that ``weights``,
        ``get_config`` and ``.keras`` files describe the grown model. The training data must be set again.
        """
        old = {v.name: keras.ops.convert_to_numpy(v) for v in self.weights}
        for variable in self.weights:  # not ``delattr``: Keras' runs a full garbage collection per variable
            self._untrack_variable(variable)
        with self.distribute_strategy.scope():
            self._create_state(num_users, num_items)
        for variable in self.weights:
            value = old[variable.name]
            if value.ndim:
                value = np.pad(value, [(0, variable.shape[0] - value.shape[0])] + [(0, 0)] * (value.ndim - 1))
            variable.assign(value)
        self.engine = None
        self._heldout = None
        self._forget_trace()
        self.test_function = self.predict_function = None

    def _forget_trace(self) -> None:
        """Drops the traced sweep and what it captured (the engine's layouts, the validation data) with it."""
        self.train_function = None
        self._traced_for = _TracedFor(None, None)

    def initialize_factors(self, seed: int | None = None) -> None:
        """Draws both factor matrices from the configured initialisation (TF1: N(0, 1)), seeded."""
        seed = self.config.seed if seed is None else seed
        rng = np.random.default_rng(seed)
        scale = 1.0 if self.config.init == "normal" else 1.0 / np.sqrt(self.config.latent_factors)
        k = self.config.latent_factors
        self.user_factors.assign(rng.standard_normal((self.num_users, k), dtype=np.float32) * scale)
        self.item_factors.assign(rng.standard_normal((self.num_items, k), dtype=np.float32) * scale)

    def set_training_data(
        self,
        train: Ratings | Partition | tf.SparseTensor | sp.spmatrix | sp.sparray,
        row_weights: None | float | np.ndarray | str = "config",
        col_weights: None | float | np.ndarray | str = "config",
    ) -> None:
        """Builds the sweep engine of the training matrix (once per fit).

        Args:
            train: the observed entries, shape (num_users, num_items): ``Ratings``, ``tf.SparseTensor`` or scipy
                sparse (explicit zeros count as observed); or, on one of several workers, that worker's
                ``engine.Partition``.
            row_weights, col_weights: R and C (tf1 mode). ``"config"`` (default) derives them as TF1 does: R_i = 1
                and C_j from ``wt_type`` over the training counts, or None for both when ``config.weights`` is
                False. Otherwise None (plain ALS), a non-negative scalar, or a vector.
        """
        from_config = isinstance(row_weights, str) and row_weights == "config"
        if from_config != (isinstance(col_weights, str) and col_weights == "config"):
            raise ValueError("`row_weights` and `col_weights` should both be 'config' or both be given.")
        if isinstance(train, Partition):
            if train.shape != (self.num_users, self.num_items):
                raise ValueError(
                    f"The partition should have shape {(self.num_users, self.num_items)}. Received: {train.shape}"
                )
            partition = train
        else:
            rows, cols, values = _coo(train, (self.num_users, self.num_items))
            partition = Partition.single(rows, cols, values, (self.num_users, self.num_items))
        given = None
        if not from_config:
            given = (
                weights_lib.resolve(row_weights, self.num_users, "row_weights"),
                weights_lib.resolve(col_weights, self.num_items, "col_weights"),
            )
        self.engine = SweepEngine(self.mode, partition, given)
        self.global_mean.assign(self.engine.mean)
        self.rating_range.assign(self.engine.rating_range)
        if not self.mode.biases:
            self.user_bias.assign(np.zeros(self.num_users, np.float32))
            self.item_bias.assign(np.zeros(self.num_items, np.float32))
        if partition.blocks.count == 1:
            self.set_seen_items(partition.by_row.rows, partition.by_row.cols, partition.by_row.values)
        if isinstance(train, Ratings):
            self.set_vocabularies(train.user_ids, train.item_ids)
        # The engine's layouts are captured by the traced sweep: trace again for new training data.
        self._forget_trace()

    # ----------------------------------------------------------------------------------------------- Keras
    def fit(
        self, x=None, y=None, *, epochs: int | None = None, validation_data=None, ranking_k: int | None = None, **kwargs
    ):
        """Runs ``epochs`` sweeps (default ``config.num_iters``) over the training matrix ``x``.

        ``x`` is the training matrix (``Ratings``, ``tf.SparseTensor``, scipy sparse, or this worker's
        ``engine.Partition``), or, with ``y``, int (user, item) index pairs [nnz, 2] whose ratings [nnz] are ``y``
        (as in ``validation_data=(pairs, ratings)``); it may be omitted after ``set_training_data``.
        ``validation_data`` (``Ratings``, ``engine.Entries`` or ``(pairs, ratings)``; on several workers, this
        worker's part) adds ``val_rmse`` to the logs after every sweep. With ``ranking_k`` (``metrics.RANKING_K``
        = 10 is the usual cutoff) and ``validation_data`` a ``Ratings``, every sweep also logs ``val_ndcg@<k>``
        and ``val_precision@<k>`` (``metrics.heldout_ranking``: each validation user's top k, training items
        excluded, against the user's validation items), which ``mode="auto"`` callbacks know to maximise.
        Callbacks, ``verbose`` and ``initial_epoch`` work as in Keras; one epoch is one sweep.
        """
        if y is not None:
            x = _pairs_matrix(x, y, (self.num_users, self.num_items))
        for unsupported in ("batch_size", "steps_per_epoch", "shuffle", "class_weight", "sample_weight"):
            if kwargs.get(unsupported) is not None:
                raise ValueError(f"`{unsupported}` is not used by WALSModel.fit: one epoch is one full sweep.")
        for unsupported in ("validation_split", "validation_steps", "validation_batch_size", "validation_freq"):
            if kwargs.pop(unsupported, None) not in (None, 1, 0.0):
                raise ValueError(f"`{unsupported}` is not used by WALSModel.fit: pass `validation_data`.")
        given = kwargs.get("callbacks") or []
        given = list(given.callbacks if isinstance(given, keras.callbacks.CallbackList) else given)
        for callback in given:
            if isinstance(callback, (keras.callbacks.ReduceLROnPlateau, keras.callbacks.LearningRateScheduler)):
                raise ValueError(
                    f"`callbacks`: {type(callback).__name__} sets an optimizer's learning rate, and WALSModel has no "
                    "optimizer (its sweeps solve the rows in closed form)."
                )
        if x is not None:
            self.set_training_data(x)
        if self.engine is None:
            raise ValueError("`x` should be the training matrix: no training data was given to fit().")
        shape = (self.num_users, self.num_items)
        self._heldout = None if validation_data is None else _entries(validation_data, shape)
        if ranking_k is not None:
            ranked = self._ranking_callback(ranking_k, validation_data)
            given = [ranked, *given]
            callbacks = kwargs.get("callbacks")
            if isinstance(callbacks, keras.callbacks.CallbackList):  # the caller's own list, its model set
                ranked.set_model(self)
                callbacks.callbacks.insert(0, ranked)
            else:
                kwargs["callbacks"] = [ranked, *(callbacks or [])]
        self._ranking_ks = tuple(sorted({c.k for c in given if isinstance(c, HeldoutRanking)}))
        # The traced sweep captures the engine and the validation entries: keep it while both are the same objects.
        if self.train_function is None or not self._traced_for.holds(self.engine, validation_data):
            self.train_function = None
            self._traced_for = _TracedFor(self.engine, validation_data)
        if epochs is None:
            epochs = self.config.num_iters
        replicas = self.distribute_strategy.num_replicas_in_sync
        dummy = tf.data.Dataset.from_tensors(tf.zeros([1], tf.float32)).repeat().batch(replicas)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        self._fitting = True
        try:
            return super().fit(dummy.with_options(options), epochs=epochs, steps_per_epoch=1, shuffle=False, **kwargs)
        except tf.errors.InvalidArgumentError as err:
            if "Cholesky" in str(err) or "not finite" in str(err):
                raise NonFiniteFactorsError(
                    "WALS sweep diverged: a k x k system was not positive definite or the factors became NaN/inf. "
                    "Check the ratings for extreme values, raise `regularization`, or lower the weights "
                    f"(config: {self.config})."
                ) from err
            raise
        finally:
            self._fitting = False

    def _tables(self) -> tuple[tf.Tensor, tf.Tensor]:
        """The factor tables of the sweep: U and V, with the bias column [U, b], [V, c] in a mode with biases."""
        u, v = tf.convert_to_tensor(self.user_factors), tf.convert_to_tensor(self.item_factors)
        if self.mode.biases:
            u = tf.concat([u, tf.convert_to_tensor(self.user_bias)[:, None]], axis=1)
            v = tf.concat([v, tf.convert_to_tensor(self.item_bias)[:, None]], axis=1)
        return u, v

    def train_step(self, data):
        del data
        engine = self.engine
        u, v = engine.sweep(*self._tables())
        u = tf.debugging.assert_all_finite(u, "user factors not finite after the sweep")
        v = tf.debugging.assert_all_finite(v, "item factors not finite after the sweep")
        (uf, ub), (vf, vb) = engine.split(u), engine.split(v)
        self.user_factors.assign(uf)
        self.item_factors.assign(vf)
        if self.mode.biases:
            self.user_bias.assign(ub)
            self.item_bias.assign(vb)
        logs = engine.metrics(u, v, with_loss=self.config.compute_loss)
        if self._heldout is not None:
            logs["val_rmse"] = engine.heldout_rmse(u, v, self._heldout)
        # Under several workers Keras averages each log over the workers along axis 0 (they are equal).
        shape = [1] if _multi_worker(self.distribute_strategy) else []
        return {name: tf.reshape(value, shape) for name, value in logs.items()}

    def test_step(self, data):
        pairs, ratings = data[0], data[1]
        predictions = self(pairs)
        targets = self.mode.heldout_targets(tf.cast(ratings, tf.float32))
        self._squared_error.update_state(tf.square(targets - predictions))
        return {"rmse": tf.sqrt(self._squared_error.result())}

    def _ranking_callback(self, ranking_k, validation_data) -> HeldoutRanking:
        """The ``HeldoutRanking`` of ``fit(ranking_k=...)``, first among the callbacks (its logs are read after)."""
        _check_ranking_k(ranking_k, self.num_items)
        if not isinstance(validation_data, Ratings):
            raise ValueError(
                "`ranking_k` needs `validation_data` as a wals2.Ratings (each user's validation items). Received: "
                f"{type(validation_data).__name__}"
            )
        if _multi_worker(self.distribute_strategy):
            raise ValueError(
                "`ranking_k` ranks the whole validation set in one process; on several workers, give the chief a "
                "wals2.callbacks.HeldoutRanking of every worker's validation entries instead."
            )
        return HeldoutRanking(validation_data, int(ranking_k), names=RANKING_LOGS)

    def evaluate(self, x=None, y=None, batch_size: int | None = 65536, *, ranking_k: int | None = None, **kwargs):
        """Keras ``evaluate`` of (pairs, ratings) or of a ``Ratings``; the batch size defaults to 65,536 pairs.

        With ``x`` a ``Ratings`` and ``ranking_k``, the results also hold ``ndcg@<k>`` and ``precision@<k>``
        of its users' top k (``metrics.heldout_ranking``, training items excluded), after ``rmse``.
        """
        heldout = x if isinstance(x, Ratings) else None
        if heldout is not None:
            if y is not None:
                raise ValueError("`y` should be None when `x` is a wals2.Ratings (its values are the ratings).")
            if heldout.shape != (self.num_users, self.num_items):
                raise ValueError(f"`x` should have shape {(self.num_users, self.num_items)}. Received: {heldout.shape}")
            x, y = heldout.pairs(), heldout.values
        elif _arrays(x) and _arrays(y):
            values = _pairs(x, y, (self.num_users, self.num_items), "`evaluate(x, y)`")[2]
            if not np.all(np.isfinite(values)):
                raise ValueError("`evaluate(x, y)` ratings should be finite. Received NaN or inf values.")
            x, y = np.asarray(x), np.asarray(y)  # Keras takes arrays, not nested lists
        if _arrays(x) and not len(x):
            raise ValueError("`evaluate` needs at least one (user, item) pair to compute `rmse`. Received: 0 pairs")
        if ranking_k is None:
            return super().evaluate(x, y, batch_size=batch_size, **kwargs)
        _check_ranking_k(ranking_k, self.num_items)
        if heldout is None:
            raise ValueError(f"`ranking_k` needs `x` as a wals2.Ratings. Received: {type(x).__name__}")
        return_dict = kwargs.pop("return_dict", False)
        results = super().evaluate(x, y, batch_size=batch_size, return_dict=True, **kwargs)
        scores = ranking.heldout_ranking(self, heldout, int(ranking_k))
        results.update(ranking.logs(scores, int(ranking_k), RANKING_LOGS))
        return results if return_dict else list(results.values())

    def predict(self, x, batch_size: int | None = PREDICT_BATCH_SIZE, **kwargs):
        """Keras ``predict`` of int (user, item) pairs [b, 2] -> float32 [b]; the batch defaults to 4,096 pairs."""
        if _arrays(x):
            if not len(x) or not _index_pairs(x, (self.num_users, self.num_items), "`x`")[0].size:
                return np.zeros(0, np.float32)  # Keras' predict loop needs a batch
            x = np.asarray(x)  # Keras takes arrays, not nested lists
        return super().predict(x, batch_size=batch_size, **kwargs)

    def export(self, filepath, format: str = "tf_saved_model", verbose=None, top_k: int = 10, **kwargs):
        """Writes the serving SavedModel (``export.export_saved_model``: raw ids in, top-k items out) to
        ``filepath``. ``format`` should be "tf_saved_model"; ``verbose`` is accepted for Keras' signature."""
        if format != "tf_saved_model" or kwargs:
            raise ValueError(
                'WALSModel.export writes the serving SavedModel only: `format` should be "tf_saved_model" and no '
                f"other Keras export argument is used. Received: format={format!r}, {sorted(kwargs)}"
            )
        from wals2.export import export_saved_model  # export imports the model's modules: import on use

        return export_saved_model(self, str(filepath), top_k=top_k)

    def call(self, pairs):
        """Predictions for int pairs [b, 2] (user index, item index); returns float32 [b].

        mu + b_i + c_j + u_i.v_j, clipped to the training ratings' range (u_i.v_j without biases).
        """
        pairs = tf.cast(pairs, tf.int32)
        return self.predict_pairs(pairs[:, 0], pairs[:, 1])

    def predict_pairs(self, users, items, clip: bool = True) -> tf.Tensor:
        """The prediction of each (users[e], items[e]) index pair, float32 [b] (unclipped with ``clip`` False)."""
        scores = scoring.pair_scores(
            self.user_factors, self.item_factors, self.user_bias, self.item_bias, self.global_mean, users, items
        )
        return tf.clip_by_value(scores, self.rating_range[0], self.rating_range[1]) if clip else scores

    def rmse(self, ratings: Ratings) -> float | None:
        """The RMSE of the predictions against ``ratings`` (the preference 1 in the implicit mode); None if empty."""
        if not ratings.nnz:
            return None
        predictions = self.predict_pairs(ratings.users, ratings.items).numpy()
        return ranking.rmse(self.mode.heldout_targets(ratings.values.astype(np.float64)), predictions)

    @property
    def metrics(self):
        # ``evaluate`` accumulates the squared errors; ``fit`` logs the engine's all-reduced sums instead, so its
        # epochs read no metric variable (under several workers each read would be a collective of its own). The
        # stateless ``LogDirections`` of ``_log_directions`` tell ``mode="auto"`` callbacks the registry's direction
        # of ``rmse`` and ``loss`` and, with ``fit(ranking_k=k)``, of the ranking logs at k.
        directions = _log_directions(self._ranking_ks)
        return directions if self._fitting else [self._squared_error, *directions]

    def compile(self, jit_compile: bool = False, **kwargs):
        """Keras ``compile``; XLA is off by default (it is slower on the sweep and cannot run sparse ops), and there
        is no optimizer (the sweeps are closed-form; Keras' default one would make TensorBoard log a learning rate
        that means nothing here)."""
        if jit_compile is True:
            raise ValueError("`jit_compile` should be False for WALSModel: XLA slows the sweep 5-16x on CPU.")
        unused = {key: value for key, value in kwargs.items() if key in _UNUSED_COMPILE_ARGUMENTS and value is not None}
        if unused:
            raise ValueError(
                f"WALSModel.compile takes no {', '.join(f'`{key}`' for key in unused)}: the sweeps solve the rows in "
                "closed form (no loss or optimizer), and fit and evaluate log `rmse` (and, with `ranking_k` or a "
                f"wals2.callbacks.HeldoutRanking, ranking metrics) themselves. Received: {unused}"
            )
        kwargs.pop("optimizer", None)
        super().compile(jit_compile=False, optimizer=None, **kwargs)

    def summary(self, print_fn=None, **kwargs):
        """Prints the model's state variables and hyperparameters (it has no layers, so Keras' table would be empty).

        Args:
            print_fn: called with the whole text (default: ``print``); other Keras ``summary`` arguments are ignored.
        """
        rows = [(v.name, tuple(v.shape), int(np.prod(v.shape))) for v in self.weights]
        width = max(len(name) for name, _, _ in rows)
        lines = [
            f'WALSModel "{self.name}": {self.num_users} users x {self.num_items} items, mode {self.config.mode}, '
            f"k = {self.config.latent_factors} (updated by closed-form sweeps, not by an optimizer)",
            *(f"  {name:<{width}}  {str(shape):<16} {size:>12,}" for name, shape, size in rows),
            f"  {'total':<{width}}  {'':<16} {sum(size for _, _, size in rows):>12,} non-trainable values",
        ]
        (print_fn or print)("\n".join(lines))

    def get_compile_config(self):
        return {"jit_compile": False}

    def compile_from_config(self, config):
        self.compile()

    def get_config(self):
        return {
            "num_users": self.num_users,
            "num_items": self.num_items,
            "config": self.config.to_dict(),
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config):
        """The model of ``get_config``; its state is created by ``load_own_variables`` (``keras.models.load_model``,
        after checking the weights file's shapes) or, otherwise, on first use."""
        return cls(**config, _defer_state=True)

    # ----------------------------------------------------------------------------------------- inference
    def loss_value(self) -> float:
        """The mode's objective at the current factors over the training data."""
        self._require_training_data("loss_value")
        return float(self.engine.metrics(*self._tables())["loss"])

    # ------------------------------------------------------------------------------------------ partial fits
    def partial_fit_users(self, user_indices, user_items, max_new_users: int = MAX_NEW_ROWS) -> None:
        """Solves the factors (and biases) of the given users exactly against the fixed item side, in place.

        As implicit's ``partial_fit_users``: each user's row is replaced by its row of ``user_items`` and solved
        as the sweep's row update (``foldin.solve``); indices >= ``num_users`` add users (those in between get
        zero factors). The users' seen items become their new rows. The tf1 mode's weights are the configured
        ones (R = 1, C_j from the seen items' positive counts), as in fold-in, not ``row_weights`` /
        ``col_weights`` given to ``set_training_data``. One process only; the training data must be set again
        before another ``fit``. Atomic: everything is validated and solved first, then the factors, seen items
        and vocabularies are written together; on a ``ValueError`` the model is unchanged.

        Args:
            user_indices: distinct int user indices [b]; with raw ids set, new users need ``partial_fit_users_ids``.
            user_items: the users' ratings, [b, num_items] (row r is ``user_indices[r]``): scipy sparse,
                ``tf.SparseTensor`` or a ``Ratings`` of that shape.
            max_new_users: the most users the call may add (indices up to num_users + max_new_users - 1).

        Raises:
            ValueError: bad indices or ratings, more than ``max_new_users`` new users, or a solution that is
                not finite.
        """
        self._partial_fit(0, user_indices, user_items, ("user_indices", "user_items"), max_new_users)

    def partial_fit_items(self, item_indices, item_users, max_new_items: int = MAX_NEW_ROWS) -> None:
        """Solves the factors (and biases) of the given items exactly against the fixed user side, in place.

        ``partial_fit_users`` with the sides swapped: ``item_users`` is [b, num_users] (row r is
        ``item_indices[r]``), indices >= ``num_items`` add items (at most ``max_new_items``), and every user's
        seen items get the new entries of these items instead of the old ones. Atomic as ``partial_fit_users``.
        """
        self._partial_fit(1, item_indices, item_users, ("item_indices", "item_users"), max_new_items)

    def partial_fit_users_ids(self, user_ids, user_items, max_new_users: int = MAX_NEW_ROWS) -> None:
        """``partial_fit_users`` by raw user ids; ids not in the vocabulary are new users, appended in order.

        Args:
            user_ids: distinct raw user ids [b].
            user_items: [b, num_items] by item index (scipy sparse or ``tf.SparseTensor``, row r is
                ``user_ids[r]``), or a ``Ratings`` whose user ids are among ``user_ids`` and whose item ids are
                the model's (KeyError naming an unknown one).
            max_new_users: the most new ids the call may add.
        """
        self._partial_fit_ids(0, user_ids, user_items, ("user_ids", "user_items"), max_new_users)

    def partial_fit_items_ids(self, item_ids, item_users, max_new_items: int = MAX_NEW_ROWS) -> None:
        """``partial_fit_items`` by raw item ids; ids not in the vocabulary are new items, appended in order.

        Args:
            item_ids: distinct raw item ids [b].
            item_users: [b, num_users] by user index, or a ``Ratings`` whose item ids are among ``item_ids`` and
                whose user ids are the model's.
            max_new_items: the most new ids the call may add.
        """
        self._partial_fit_ids(1, item_ids, item_users, ("item_ids", "item_users"), max_new_items)

    def _partial_fit_ids(self, axis: int, raw_ids, matrix, names: tuple[str, str], max_new: int) -> None:
        vocabularies = self._require_vocabularies(f"partial_fit_{('users', 'items')[axis]}_ids")
        indices, matrix, new_ids = partial_fit.raw_queries(vocabularies, axis, raw_ids, matrix, names)
        self._partial_fit(axis, indices, matrix, names, max_new, new_ids)

    def _partial_fit(self, axis: int, indices, matrix, names: tuple[str, str], max_new: int, new_ids=None) -> None:
        """Solves the rows ``indices`` of one side (0: users, 1: items) on the entries of ``matrix`` [b, other],
        then commits the solution, seen items and vocabularies together (``partial_fit.solve_rows``)."""
        bound = f"max_new_{('users', 'items')[axis]}"
        max_new = validate.integer(bound, max_new, low=0)
        indices = partial_fit.query_indices(indices, names[0])
        entries = _coo(matrix, (indices.size, (self.num_items, self.num_users)[axis]), names[1])
        solved = partial_fit.solve_rows(self, axis, indices, *entries, names, int(max_new), new_ids)
        if solved.sizes != (self.num_users, self.num_items):
            self._resize(*solved.sizes)
        k = self.config.latent_factors
        factors, bias = [(self.user_factors, self.user_bias), (self.item_factors, self.item_bias)][axis]
        updates = [(factors, solved.solution[:, :k])]
        if self.mode.biases:
            updates.append((bias, solved.solution[:, k]))
        for variable, rows in updates:
            variable.assign(tf.tensor_scatter_nd_update(tf.convert_to_tensor(variable), indices[:, None], rows))
        self._seen, self._vocabularies = solved.seen, solved.vocabularies
        self.engine = None  # the training matrix changed: fit needs it again
        self._forget_trace()
        logger.debug("partial fit of %d %s", indices.size, ("users", "items")[axis])

    def _recalculated(self, axis: int, indices, matrix, names: tuple[str, str]) -> tuple[tf.Tensor, tf.Tensor]:
        """(factors [b, k], biases [b]) of the rows ``indices`` of one side solved from ``matrix`` [b, other side]
        against the fixed other side, not stored (``partial_fit.recalculated``; ``Recommender``'s contract)."""
        if sp.issparse(matrix) and matrix.ndim == 1:  # one row, as ``csr_array[u]`` gives it
            matrix = matrix.reshape(1, -1)
        entries = _coo(matrix, (indices.size, (self.num_items, self.num_users)[axis]), names[1])
        return partial_fit.recalculated(self, axis, indices, *entries, names)

    def _require_training_data(self, what: str) -> None:
        if self.engine is None:
            raise ValueError(f"{what} needs the training data: call fit(train) or set_training_data(train) first.")


def _check_ranking_k(ranking_k, num_items: int) -> None:
    validate.integer("ranking_k", ranking_k, 1, num_items)


def _multi_worker(strategy) -> bool:
    """Whether Keras reduces the logs across workers (a MultiWorkerMirroredStrategy with several workers)."""
    extended = getattr(strategy, "extended", None)
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and extended._in_multi_worker_mode()


def _entries(heldout, shape: tuple[int, int]) -> Entries:
    """``Entries`` of held-out data: ``Ratings``, ``Entries`` or ``(pairs [b, 2], ratings [b])``."""
    if isinstance(heldout, Entries):
        return heldout
    if isinstance(heldout, Ratings):
        if heldout.shape != tuple(shape):
            raise ValueError(f"`validation_data` should have shape {tuple(shape)}. Received: {heldout.shape}")
        return Entries(heldout.users, heldout.items, heldout.values.astype(np.float64))
    if isinstance(heldout, (tuple, list)) and len(heldout) == 2:
        return Entries(*_pairs(heldout[0], heldout[1], shape, "`validation_data`"))
    raise TypeError(
        f"`validation_data` should be a wals2.Ratings or (pairs, ratings). Received: {type(heldout).__name__}"
    )


def _pairs(pairs, values, shape: tuple[int, int], what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users int64 [b], items int64 [b], ratings float64 [b]) of index pairs [b, 2] and ratings [b], checked."""
    pairs = np.asarray(pairs)
    values = np.asarray(values, np.float64).reshape(-1)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.shape[0] != values.size:
        raise ValueError(
            f"{what} should be (pairs [b, 2], ratings [b]). Received shapes {pairs.shape} and {values.shape}"
        )
    users, items = _index_pairs(pairs, shape, what)
    return users, items, values


#: Keras ``compile`` arguments that a closed-form model has no use for (refused unless None).
_UNUSED_COMPILE_ARGUMENTS = ("optimizer", "loss", "loss_weights", "metrics", "weighted_metrics")

#: Keras ``Model.__init__``'s own keyword arguments (those of ``keras.layers.Layer``), passed on as they are.
_KERAS_MODEL_ARGUMENTS = frozenset(
    p.name for p in inspect.signature(keras.layers.Layer.__init__).parameters.values() if p.kind is p.KEYWORD_ONLY
)

#: The names implicit (and Spark) give to WALSConfig fields, for the message of an unknown argument.
_ALIASES = {
    "factors": "latent_factors",
    "rank": "latent_factors",
    "iterations": "num_iters",
    "max_iter": "num_iters",
    "regParam": "regularization",
    "random_state": "seed",
}


class _TracedFor:
    """The engine and ``validation_data`` (the objects themselves) that ``fit``'s traced sweep captured; a plain
    object, so that Keras' attribute tracking keeps a tuple of pairs given as validation data as it is."""

    def __init__(self, engine, validation_data):
        self.engine, self.validation_data = engine, validation_data

    def holds(self, engine, validation_data) -> bool:
        return self.engine is engine and self.validation_data is validation_data


def _index_pairs(pairs, shape: tuple[int, int], what: str) -> tuple[np.ndarray, np.ndarray]:
    """(users int64 [b], items int64 [b]) of int (user, item) index pairs [b, 2], checked against ``shape``."""
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"{what} should be int (user, item) index pairs [b, 2]. Received shape {pairs.shape}")
    if pairs.size and pairs.dtype.kind not in "iu":
        raise ValueError(f"{what} pairs should be int (user, item) indices. Received dtype {pairs.dtype}")
    for axis, size, name in ((0, shape[0], "user"), (1, shape[1], "item")):
        if pairs.size and (pairs[:, axis].min() < 0 or pairs[:, axis].max() >= size):
            raise ValueError(f"{what} {name} indices should be in [0, {size}).")
    return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)


def _arrays(x) -> bool:
    """Whether ``x`` is held in memory (an array, a tensor or a list), as opposed to a dataset or a generator."""
    return isinstance(x, (np.ndarray, tf.Tensor, list))


def _pairs_matrix(x, y, shape: tuple[int, int]) -> sp.coo_array:
    """The training matrix of ``fit(x, y)``: x int (user, item) pairs [nnz, 2], y their ratings [nnz]."""
    users, items, values = _pairs(x, y, shape, "`fit(x, y)`")
    return sp.coo_array((values, (users, items)), shape=shape)


def _coo(train, shape: tuple[int, int], name: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, values) of the supported training inputs, checked against ``shape``.

    ``name`` is the argument named in messages (default: ``x``, the training matrix of ``fit``).
    """
    what = "The training matrix" if name is None else f"`{name}`"
    if isinstance(train, Ratings):
        rows, cols, values, got = train.users, train.items, train.values, train.shape
    elif isinstance(train, tf.SparseTensor):
        idx = train.indices.numpy()
        rows, cols, values, got = idx[:, 0], idx[:, 1], train.values.numpy(), tuple(train.dense_shape.numpy())
    elif sp.issparse(train):
        coo = sp.coo_array(train)
        rows, cols, values, got = coo.row, coo.col, coo.data, coo.shape
    else:
        raise TypeError(
            f"`{name or 'x'}` should be a wals2.Ratings, a tf.SparseTensor or a scipy sparse matrix. "
            f"Received: {type(train).__name__}"
        )
    if tuple(int(s) for s in got) != tuple(shape):
        axes = " (num_users, num_items)" if name is None else ""
        raise ValueError(f"{what} should have shape {shape}{axes}. Received: {got}")
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        subject = "The training ratings" if name is None else what
        raise ValueError(f"{subject} should be finite. Received NaN or inf values.")
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    for index, size, axis in ((rows, shape[0], "row"), (cols, shape[1], "column")):
        if index.size and (index.min() < 0 or index.max() >= size):
            raise ValueError(
                f"{what}'s {axis} indices should be in [0, {size}). Received: min {index.min()}, max {index.max()}"
            )
    repeated, _ = repeated_pairs(rows, cols, shape[1])
    if repeated:
        raise ValueError(f"{what} has {repeated} duplicate (row, column) entries.")
    return rows, cols, values
