"""``WALSModel``: weighted ALS as a Keras 3 model whose ``fit`` runs closed-form sweeps instead of gradients."""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from wals2 import objective
from wals2 import solver as solver_lib
from wals2 import weights as weights_lib
from wals2.config import WALSConfig
from wals2.data import Ratings
from wals2.layout import build_layouts

logger = logging.getLogger(__name__)

# Pairs per chunk when scoring (user, item) pairs: bounds the two gathered [chunk, k] matrices.
PAIR_CHUNK = 1 << 18


class NonFiniteFactorsError(FloatingPointError):
    """A sweep produced NaN or infinite factors (or a k x k system could not be factorised)."""


@keras.saving.register_keras_serializable(package="wals2")
class WALSModel(keras.Model):
    """Matrix factorisation A ~ U V' trained by TF1's weighted alternating least squares.

    ``fit(train, epochs=N)`` runs N sweeps; each sweep solves every user row exactly, then every item row
    (``solver.half_sweep``), with no gradients. The factors are non-trainable variables updated with ``assign``.

    Example:
        >>> model = WALSModel(num_users, num_items, latent_factors=10)
        >>> model.compile(jit_compile=False)
        >>> model.fit(train, epochs=20, validation_data=(test.pairs(), test.values))
        >>> items, scores = model.recommend([0, 1], k=10)

    Args:
        num_users: m, the number of user rows.
        num_items: n, the number of item columns.
        config: a ``WALSConfig``; keyword arguments named like its fields override it.
        **kwargs: ``WALSConfig`` fields, or Keras ``Model`` arguments such as ``name``.
    """

    def __init__(self, num_users: int, num_items: int, config: WALSConfig | dict | None = None, **kwargs: Any):
        fields = set(WALSConfig.__dataclass_fields__)
        overrides = {key: kwargs.pop(key) for key in list(kwargs) if key in fields}
        super().__init__(**kwargs)
        for name, value in (("num_users", num_users), ("num_items", num_items)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"`{name}` should be a positive integer. Received: {name}={value!r}")
        if isinstance(config, dict):
            config = WALSConfig.from_dict(config)
        self.config = (config or WALSConfig()).replace(**overrides)
        self.num_users = int(num_users)
        self.num_items = int(num_items)
        k = self.config.latent_factors
        self.user_factors = self.add_weight(
            shape=(self.num_users, k), initializer="zeros", trainable=False, name="user_factors"
        )
        self.item_factors = self.add_weight(
            shape=(self.num_items, k), initializer="zeros", trainable=False, name="item_factors"
        )
        # Explicit mode's biases and the clipping range of its predictions; zeros / unclipped otherwise.
        self.user_bias = self.add_weight(
            shape=(self.num_users,), initializer="zeros", trainable=False, name="user_bias"
        )
        self.item_bias = self.add_weight(
            shape=(self.num_items,), initializer="zeros", trainable=False, name="item_bias"
        )
        self.global_mean = self.add_weight(shape=(), initializer="zeros", trainable=False, name="global_mean")
        self.rating_range = self.add_weight(shape=(2,), initializer="zeros", trainable=False, name="rating_range")
        self.rating_range.assign([-np.inf, np.inf])
        self._squared_error = keras.metrics.Mean(name="squared_error")
        self._train: dict[str, Any] | None = None
        self.initialize_factors()
        self.built = True

    # ----------------------------------------------------------------------------------------------- state
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
        train: Ratings | tf.SparseTensor | sp.spmatrix | sp.sparray,
        row_weights: None | float | np.ndarray | str = "config",
        col_weights: None | float | np.ndarray | str = "config",
    ) -> None:
        """Builds both half-sweep layouts of the training matrix (once per fit).

        Args:
            train: the observed entries, shape (num_users, num_items): ``Ratings``, ``tf.SparseTensor`` or scipy
                sparse. Explicit zeros count as observed.
            row_weights, col_weights: R and C. ``"config"`` (default) derives them as TF1 does: R_i = 1 and C_j
                from ``wt_type`` over the training counts, or None for both when ``config.weights`` is False.
                Otherwise None (plain ALS), a non-negative scalar, or a vector.
        """
        rows, cols, values = _coo(train, (self.num_users, self.num_items))
        cfg = self.config
        shape = (self.num_users, self.num_items)
        from_config = isinstance(row_weights, str) and row_weights == "config"
        if from_config != (isinstance(col_weights, str) and col_weights == "config"):
            raise ValueError("`row_weights` and `col_weights` should both be 'config' or both be given.")
        if cfg.mode != "tf1" and not from_config:
            raise ValueError(f"`row_weights`/`col_weights` apply to mode 'tf1' only. Received: mode={cfg.mode!r}")
        if from_config:
            weighting = objective.weighting(cfg, values, shape, objective.statistics(cols, values, self.num_items))
        else:  # weights given by the caller (tf1 mode)
            r = weights_lib.resolve(row_weights, self.num_users, "row_weights")
            c = weights_lib.resolve(col_weights, self.num_items, "col_weights")
            if (r is None) != (c is None):
                raise ValueError("`row_weights` and `col_weights` should both be None (plain ALS) or both be given.")
            weighting = objective.Weighting(cfg.unobs_weight, values, r, c, None, False, 0.0, (-np.inf, np.inf))
        w0 = weighting.unobserved_weight
        explicit = weighting.bias_offsets
        layouts = build_layouts(
            rows,
            cols,
            weighting.targets,
            shape,
            weighting.row_weights,
            weighting.col_weights,
            w0,
            batch_entries=cfg.batch_entries,
            max_row_length=cfg.max_row_length,
            entry_weights=weighting.entry_weights,
            bias_offsets=explicit,
            scale_regularization=cfg.scale_regularization,
        )
        self.global_mean.assign(weighting.mean)
        self.rating_range.assign(weighting.rating_range)
        if not explicit:
            self.user_bias.assign(np.zeros(self.num_users, np.float32))
            self.item_bias.assign(np.zeros(self.num_items, np.float32))
        order = np.argsort(rows, kind="stable")
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=self.num_users))])
        scale = [np.ones(n, np.float32) for n in shape]
        if cfg.scale_regularization:
            scale = [np.bincount(rows, minlength=shape[0]), np.bincount(cols, minlength=shape[1])]
        self._train = {
            "layouts": layouts,
            "rows": tf.constant(rows.astype(np.int32)),
            "cols": tf.constant(cols.astype(np.int32)),
            # Targets of the objective and RMSE: the ratings (their mean is a prediction term), or 1 (implicit).
            "targets": tf.constant((weighting.targets + weighting.mean).astype(np.float32)),
            "entry_weight": tf.constant(weighting.observed_weight(rows, cols).astype(np.float32)),
            "unobserved_weight": float(w0),
            "reg_scale": [tf.constant(x.astype(np.float32)) for x in scale],
            "seen_indptr": indptr.astype(np.int64),
            "seen_items": cols[order].astype(np.int64),
        }
        # The layouts are captured by the traced sweep: trace again for new training data.
        self.train_function = None

    @property
    def training_layouts(self):
        return None if self._train is None else self._train["layouts"]

    # ----------------------------------------------------------------------------------------------- Keras
    def fit(self, x=None, y=None, *, epochs: int | None = None, validation_batch_size: int = 65536, **kwargs):
        """Runs ``epochs`` sweeps (default ``config.num_iters``) over the training matrix ``x``.

        ``x`` is the training matrix (``Ratings``, ``tf.SparseTensor`` or scipy sparse); it may be omitted after
        ``set_training_data``. ``validation_data=(pairs, ratings)`` adds ``val_rmse``; callbacks, ``verbose``
        and ``initial_epoch`` work as in Keras. One epoch is one sweep, and ``y`` must be None.
        """
        if y is not None:
            raise ValueError("`y` should be None: the ratings are the values of `x`. Received a `y`.")
        for unsupported in ("batch_size", "steps_per_epoch", "shuffle", "class_weight", "sample_weight"):
            if kwargs.get(unsupported) is not None:
                raise ValueError(f"`{unsupported}` is not used by WALSModel.fit: one epoch is one full sweep.")
        if x is not None:
            self.set_training_data(x)
        if self._train is None:
            raise ValueError("`x` should be the training matrix: no training data was given to fit().")
        if epochs is None:
            epochs = self.config.num_iters
        try:
            return super().fit(
                np.zeros((1, 1), np.float32),
                epochs=epochs,
                batch_size=1,
                validation_batch_size=validation_batch_size,
                **kwargs,
            )
        except tf.errors.InvalidArgumentError as err:
            if "Cholesky" in str(err) or "not finite" in str(err):
                raise NonFiniteFactorsError(
                    "WALS sweep diverged: a k x k system was not positive definite or the factors became NaN/inf. "
                    "Check the ratings for extreme values, raise `regularization`, or lower the weights "
                    f"(config: {self.config})."
                ) from err
            raise

    def train_step(self, data):
        del data
        train = self._train
        cfg = self.config
        explicit = cfg.mode == "explicit"
        w0 = train["unobserved_weight"]
        u, v = tf.convert_to_tensor(self.user_factors), tf.convert_to_tensor(self.item_factors)
        if explicit:  # solve [x_i, b_i] against [y_j, 1] with targets a_ij - mu - c_j (and symmetrically)
            u = tf.concat([u, tf.convert_to_tensor(self.user_bias)[:, None]], axis=1)
            v = tf.concat([v, tf.convert_to_tensor(self.item_bias)[:, None]], axis=1)
        u, v = solver_lib.sweep(
            train["layouts"],
            u,
            v,
            cfg.regularization,
            w0,
            solver=cfg.solver,
            cg_steps=cfg.cg_steps,
            biases=explicit,
        )
        u = tf.debugging.assert_all_finite(u, "user factors not finite after the sweep")
        v = tf.debugging.assert_all_finite(v, "item factors not finite after the sweep")
        k = cfg.latent_factors
        self.user_factors.assign(u[:, :k])
        self.item_factors.assign(v[:, :k])
        if explicit:
            self.user_bias.assign(u[:, k])
            self.item_bias.assign(v[:, k])
        predictions = self._pair_scores(train["rows"], train["cols"])
        logs = {"rmse": tf.sqrt(tf.reduce_mean(tf.square(train["targets"] - self._clip(predictions))))}
        if cfg.compute_loss:
            logs["loss"] = self._objective(predictions)
        return logs

    def test_step(self, data):
        pairs, ratings = data[0], data[1]
        predictions = self(pairs)
        if self.config.mode == "implicit":  # held-out observed cells have preference 1
            ratings = tf.ones_like(predictions)
        self._squared_error.update_state(tf.square(tf.cast(ratings, tf.float32) - predictions))
        return {"rmse": tf.sqrt(self._squared_error.result())}

    def call(self, pairs):
        """Predictions for int pairs [b, 2] (user index, item index); returns float32 [b].

        u_i.v_j in the tf1 and implicit modes; mu + b_i + c_j + u_i.v_j clipped to the training ratings' range in
        the explicit mode.
        """
        pairs = tf.cast(pairs, tf.int32)
        return self._clip(self._pair_scores(pairs[:, 0], pairs[:, 1]))

    def _clip(self, predictions):
        return tf.clip_by_value(predictions, self.rating_range[0], self.rating_range[1])

    @property
    def metrics(self):
        return [self._squared_error]

    def compile(self, jit_compile: bool = False, **kwargs):
        """Keras ``compile``; XLA is off by default (it is slower on the sweep and cannot run sparse ops)."""
        if jit_compile is True:
            raise ValueError("`jit_compile` should be False for WALSModel: XLA slows the sweep 5-16x on CPU.")
        super().compile(jit_compile=False, **kwargs)

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
        return cls(**config)

    # ----------------------------------------------------------------------------------------- inference
    def _pair_scores(self, users: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        """mu + b_i + c_j + u_i . v_j (unclipped) for index vectors [b], in chunks of ``PAIR_CHUNK`` pairs."""
        n = tf.shape(users)[0]
        chunks = (n + PAIR_CHUNK - 1) // PAIR_CHUNK
        pad = chunks * PAIR_CHUNK - n
        users = tf.reshape(tf.pad(users, [[0, pad]]), [-1, PAIR_CHUNK])
        items = tf.reshape(tf.pad(items, [[0, pad]]), [-1, PAIR_CHUNK])
        u, v = self.user_factors, self.item_factors

        bu, bv = self.user_bias, self.item_bias

        def dots(chunk):
            dot = tf.reduce_sum(tf.gather(u, chunk[0]) * tf.gather(v, chunk[1]), axis=-1)
            return dot + tf.gather(bu, chunk[0]) + tf.gather(bv, chunk[1])

        scores = tf.map_fn(dots, (users, items), fn_output_signature=tf.float32)
        return tf.reshape(scores, [-1])[:n] + self.global_mean

    def _objective(self, predictions: tf.Tensor) -> tf.Tensor:
        """The weighted objective, sum_obs [W (a - p)^2 - w0 p^2] + w0 tr(U'U V'V) + sum_i lambda_i |u~_i|^2 + ...

        with W the observed weight, a the target (the rating, or 1 in the implicit mode), p the unclipped
        prediction, lambda_i = lambda (or lambda n_i, ALS-WR) and u~_i the factors with the bias (explicit mode).
        """
        train, cfg = self._train, self.config
        w0 = train["unobserved_weight"]
        observed = tf.reduce_sum(
            train["entry_weight"] * tf.square(train["targets"] - predictions) - w0 * tf.square(predictions)
        )
        u, v = self.user_factors, self.item_factors
        utu = tf.matmul(u, u, transpose_a=True)
        vtv = tf.matmul(v, v, transpose_a=True)
        unobserved = w0 * tf.reduce_sum(utu * vtv)
        scale_u, scale_v = train["reg_scale"]
        norms_u = tf.reduce_sum(tf.square(u), axis=1) + tf.square(self.user_bias)
        norms_v = tf.reduce_sum(tf.square(v), axis=1) + tf.square(self.item_bias)
        penalty = cfg.regularization * (tf.reduce_sum(scale_u * norms_u) + tf.reduce_sum(scale_v * norms_v))
        return observed + unobserved + penalty

    def loss_value(self) -> float:
        """TF1's objective at the current factors over the training data."""
        self._require_training_data("loss_value")
        predictions = self._pair_scores(self._train["rows"], self._train["cols"])
        return float(self._objective(predictions))

    def recommend(
        self, user_indices, k: int = 10, exclude_seen: bool = True, batch_size: int = 1024
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items for each user by score (the unclipped prediction mu + b_i + c_j + u_i.v_j), best first.

        Args:
            user_indices: int user indices [b].
            k: items per user, 1 <= k <= num_items.
            exclude_seen: drop the user's training items. A user with fewer than k unseen items gets item -1 and
                score -inf in the remaining slots.
            batch_size: users scored at once (memory is batch_size x num_items floats).

        Returns:
            (item indices int64 [b, k], scores float32 [b, k]).
        """
        users = np.atleast_1d(np.asarray(user_indices))
        if users.ndim != 1 or users.dtype.kind not in "iu":
            raise ValueError(
                f"`user_indices` should be a 1-D array of ints. Received dtype {users.dtype}, shape {users.shape}"
            )
        if users.size and (users.min() < 0 or users.max() >= self.num_users):
            raise ValueError(
                f"`user_indices` should be in [0, {self.num_users}). Received: min {users.min()}, max {users.max()}"
            )
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= self.num_items:
            raise ValueError(f"`k` should be an integer in [1, {self.num_items}]. Received: k={k!r}")
        if exclude_seen:
            self._require_training_data("recommend(exclude_seen=True)")
        v = tf.convert_to_tensor(self.item_factors)
        out_items, out_scores = [], []
        for start in range(0, users.size, batch_size):
            batch = users[start : start + batch_size]
            scores = tf.matmul(tf.gather(tf.convert_to_tensor(self.user_factors), batch), v, transpose_b=True)
            user_offset = tf.gather(tf.convert_to_tensor(self.user_bias), batch) + self.global_mean
            scores += tf.convert_to_tensor(self.item_bias)[None, :] + user_offset[:, None]
            if exclude_seen:
                indptr, seen = self._train["seen_indptr"], self._train["seen_items"]
                lengths = indptr[batch + 1] - indptr[batch]
                cols = np.concatenate([seen[indptr[u] : indptr[u + 1]] for u in batch]) if batch.size else []
                where = np.stack([np.repeat(np.arange(batch.size), lengths), np.asarray(cols, np.int64)], axis=1)
                if where.size:
                    fill = tf.fill([where.shape[0]], tf.constant(-np.inf, tf.float32))
                    scores = tf.tensor_scatter_nd_update(scores, where, fill)
            top = tf.math.top_k(scores, k=k)
            items = top.indices.numpy().astype(np.int64)
            values = top.values.numpy()
            items[np.isneginf(values)] = -1
            out_items.append(items)
            out_scores.append(values)
        if not out_items:
            return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
        return np.concatenate(out_items), np.concatenate(out_scores)

    def _require_training_data(self, what: str) -> None:
        if self._train is None:
            raise ValueError(f"{what} needs the training data: call fit(train) or set_training_data(train) first.")


def _coo(train, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, values) of the supported training inputs, checked against ``shape``."""
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
            "`x` should be a wals2.Ratings, a tf.SparseTensor or a scipy sparse matrix. "
            f"Received: {type(train).__name__}"
        )
    if tuple(int(s) for s in got) != tuple(shape):
        raise ValueError(f"The training matrix should have shape {shape} (num_users, num_items). Received: {got}")
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError("The training ratings should be finite. Received NaN or inf values.")
    rows = np.asarray(rows, dtype=np.int64)
    cols = np.asarray(cols, dtype=np.int64)
    keys = np.unique(rows * shape[1] + cols)
    if keys.size != rows.size:
        raise ValueError(f"The training matrix has {rows.size - keys.size} duplicate (row, column) entries.")
    return rows, cols, values
