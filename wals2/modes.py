"""The three training modes, one object each: weighting, w0, targets, held-out targets and fold-in terms.

Every mode turns the observed entries (i, j, r_ij) into the coefficients of one normal equation per row, the one
``solver.half_sweep`` solves,

    (lambda_i I + w0 Y'Y + sum_{j in obs(i)} d_ij y_j y_j') x_i = sum_{j in obs(i)} (w0 + d_ij) a_ij y_j,

and every mode minimises the same weighted objective (``engine.SweepEngine.metrics``) with its own
W_ij = w0 + d_ij, w0 and targets a_ij, and predicts p_ij = mu + b_i + c_j + u_i.v_j (mu = b = c = 0 without
biases), clipped to the mode's rating range:

* ``Tf1`` (TF1's ``WALSModel``): w0 = ``unobs_weight``, a = r, d_ij = R_i C_j with R = 1 and C_j from
  ``wt_type`` over n_j, the column's training entries with r > 0 (no weights at all, plain ALS, when
  ``weights`` is False). Judged by RMSE.
* ``Explicit``: w0 = 0, d = 1, a = r - mu with mu the training mean, and user/item biases solved with the factors
  (a row solves [x_i, b_i] against [y_j, 1] with targets a_ij - c_j); predictions clipped to the training range.
  Judged by RMSE.
* ``Implicit`` (Hu, Koren and Volinsky): w0 = 1, a = 1 (the preference of an observed cell), d_ij = alpha r_ij.
  Judged by ranking; its held-out RMSE is against the preference 1.

The few numbers that depend on every training entry (n_j, mu, the rating range) are ``Statistics``, which one
process computes from its ratings and several workers sum over their blocks, so that both derive the same weights.
Nothing outside this module branches on a mode's name: callers ask the object (``mode_of(config)``).
"""

from __future__ import annotations

import logging
from typing import ClassVar, NamedTuple

import numpy as np
import tensorflow as tf

from wals2 import weights as weights_lib
from wals2.data import FLOAT32_MAX, Ratings, RatingsError, line_of, where

logger = logging.getLogger(__name__)


class Statistics(NamedTuple):
    """Sums over all training entries that the weights depend on.

    Attributes:
        positive_counts: int64 [n], n_j = entries of column j with a value > 0.
        total: float64, sum of the values.
        count: int, the number of entries.
        low, high: float64, the smallest and largest value.
    """

    positive_counts: np.ndarray
    total: float
    count: int
    low: float
    high: float

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


def statistics(cols: np.ndarray, values: np.ndarray, num_items: int) -> Statistics:
    """The ``Statistics`` of the entries (cols, values) of an m x ``num_items`` matrix."""
    values, cols = np.asarray(values), np.asarray(cols)
    low = float(values.min()) if values.size else np.inf
    positive = cols if low > 0 else cols[values > 0]  # usually every rating is positive
    return Statistics(
        positive_counts=np.bincount(positive, minlength=num_items).astype(np.int64),
        total=float(np.sum(values, dtype=np.float64)),
        count=int(values.size),
        low=low,
        high=float(values.max()) if values.size else -np.inf,
    )


class Weighting(NamedTuple):
    """A mode's normal-equation coefficients for a set of entries (see the module docstring).

    Attributes:
        unobserved_weight: w0.
        targets: float [nnz], a_ij (the ratings less mu in the explicit mode, 1 in the implicit mode).
        row_weights, col_weights: float32 [m] and [n] (R and C), or None.
        entry_weights: float [nnz], d_ij per entry (implicit mode), or None.
        mean: mu, the prediction's constant term (explicit mode), else 0.
        rating_range: (low, high), the clip of the predictions (explicit mode), else (-inf, inf).
    """

    unobserved_weight: float
    targets: np.ndarray
    row_weights: np.ndarray | None
    col_weights: np.ndarray | None
    entry_weights: np.ndarray | None
    mean: float
    rating_range: tuple[float, float]

    def observed_weight(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """W_ij = w0 + d_ij of the entries (rows, cols), float64 [nnz], the weights of the objective."""
        if self.entry_weights is not None:
            return self.unobserved_weight + self.entry_weights
        if self.row_weights is None:
            return np.full(np.shape(rows), self.unobserved_weight)
        return self.unobserved_weight + self.row_weights[rows].astype(np.float64) * self.col_weights[cols]


class FoldInTerms(NamedTuple):
    """The terms of the fold-in system of b new users (the solver's normal equation with T as the fixed side).

    Attributes:
        table: T, float32 [n, k'] (V, or [V, 1] with biases).
        unobserved_weight: w0, a float32 scalar.
        gram_weights: d, float32 [b, L] (0 on padding).
        targets: y, float32 [b, L] (0 on padding).
    """

    table: tf.Tensor
    unobserved_weight: tf.Tensor
    gram_weights: tf.Tensor
    targets: tf.Tensor


class Mode:
    """A training mode; subclasses set the class attributes and the two coefficient methods.

    Attributes:
        name: the ``WALSConfig.mode`` value.
        biases: the solve carries a user and an item bias (a bias column in the factor tables).
        ranked: judged by ranking metrics (NDCG@k) rather than by RMSE.
        hyperparameters: the ``WALSConfig`` fields this mode reads besides the common ones.
        search_ranges: the fields a hyperparameter search varies in this mode besides ``latent_factors``, each
            ``(low, high, sampling)`` for a number or None for a bool (TF1's ``config_tune.json`` ranges in the
            tf1 mode; lambda up to 100 in the others, whose best lambda sits near 10 on MovieLens).
    """

    name: ClassVar[str]
    biases: ClassVar[bool] = False
    ranked: ClassVar[bool] = False
    hyperparameters: ClassVar[tuple[str, ...]] = ()
    search_ranges: ClassVar[dict[str, tuple | None]] = {}

    def __init__(self, config):
        self.config = config

    def weighting(
        self, values: np.ndarray, shape: tuple[int, int], stats: Statistics, given: tuple | None = None
    ) -> Weighting:
        """The coefficients for entries with ``values`` float64 [nnz] (all of them, or one worker's block).

        Args:
            values: the ratings r_ij.
            shape: (m, n), the global matrix shape.
            stats: ``Statistics`` of all training entries.
            given: (R [m], C [n]) given by the caller instead of the mode's own weights, (None, None) for plain
                ALS (tf1 mode only); None for the mode's own.
        """
        raise NotImplementedError

    # The entry coefficients, written once for training (numpy, ``weighting``) and for fold-in and serving
    # (tensors, ``fold_in_terms``): plain arithmetic, so that each takes either kind and returns the same kind.

    def targets(self, values, mean=0.0):
        """a_ij of entries with ratings ``values``: the rating (less mu with biases; 1 in the implicit mode)."""
        return values

    def confidence(self, values, alpha):
        """d_ij of entries with ratings ``values`` where it is per entry (implicit mode), else None: then
        d_ij = R_i C_j from the mode's row and column weights."""
        return None

    def heldout_targets(self, values):
        """What a prediction p_ij (mu included) of an observed entry is compared with: a_ij with mu = 0 (the
        rating; 1 in the implicit mode).

        ``values`` is a numpy array or a tensor; the result is of the same kind.
        """
        return self.targets(values, 0.0)

    def fold_in_terms(self, item_factors, items, ratings, mask, params) -> FoldInTerms:
        """The ``FoldInTerms`` of new users who rated ``items`` (int [b, L], any valid index on padding).

        Args:
            item_factors: V, float32 [n, k].
            items: int [b, L], the rated items (0 on padding).
            ratings: float32 [b, L], a_j, 0 on padding.
            mask: float32 [b, L], 1 on rated slots, 0 on padding.
            params: anything with the fold-in state ``unobs_weight``, ``item_weights`` [n], ``item_bias`` [n],
                ``global_mean`` and ``alpha`` (a ``ServingModule``, or ``foldin.FoldInState``).
        """
        raise NotImplementedError

    #: The lowest rating this mode trains on (and folds in); a lower one is refused (``invalid_reason``).
    lowest_rating: ClassVar[float] = -np.inf

    def invalid_ratings(self, values: np.ndarray) -> np.ndarray:
        """bool [nnz]: the ratings this mode cannot train on, those below ``lowest_rating``."""
        return np.asarray(values) < self.lowest_rating

    def refuse_invalid(self, values, subject: str) -> None:
        """Raises ValueError "<subject> rating <first invalid one> <invalid_reason>" if ``values`` hold one."""
        values = np.asarray(values)
        invalid = np.flatnonzero(self.invalid_ratings(values))
        if invalid.size:
            raise ValueError(f"{subject} rating {values.reshape(-1)[invalid[0]]:g} {self.invalid_reason}")

    #: Why ``invalid_ratings`` refuses a rating, for messages.
    invalid_reason: ClassVar[str] = ""

    def fold_in_item_weights(self, positive_counts: np.ndarray) -> np.ndarray | None:
        """The item weights C [n] of the fold-in system from n_j, or None where the mode has none."""
        return None

    def _refuse_weights(self, given) -> None:
        if given is not None:
            raise ValueError(f"`row_weights`/`col_weights` apply to mode 'tf1' only. Received: mode={self.name!r}")


class Tf1(Mode):
    """TF1's weighting: unobserved cells are zero targets of weight w0, observed cells weigh w0 + R_i C_j."""

    name = "tf1"
    hyperparameters = ("unobs_weight", "wt_type", "feature_wt_factor", "feature_wt_exp", "weights")
    search_ranges = {
        "regularization": (1e-3, 10.0, "log"),
        "unobs_weight": (1e-3, 5.0, "log"),
        "feature_wt_factor": (1.0, 200.0, "log"),  # C_j = f / n_j (wt_type 1)
        "feature_wt_exp": (1e-4, 10.0, "linear"),  # C_j = n_j^-e (wt_type 0, web views)
    }

    def weighting(self, values, shape, stats, given=None):
        cfg = self.config
        values = np.asarray(values)
        if given is not None:
            row_weights, col_weights = given
        elif cfg.weights:
            row_weights = np.ones(shape[0], np.float32)
            col_weights = self.fold_in_item_weights(stats.positive_counts)
        else:
            row_weights = col_weights = None
        if (row_weights is None) != (col_weights is None):
            raise ValueError("`row_weights` and `col_weights` should both be None (plain ALS) or both be given.")
        targets = self.targets(values)
        return Weighting(float(cfg.unobs_weight), targets, row_weights, col_weights, None, 0.0, (-np.inf, np.inf))

    def fold_in_item_weights(self, positive_counts):
        cfg = self.config
        if not cfg.weights:
            return None
        return weights_lib.item_weights(positive_counts, cfg.wt_type, cfg.feature_wt_factor, cfg.feature_wt_exp)

    def fold_in_terms(self, item_factors, items, ratings, mask, params):
        d = tf.gather(tf.cast(params.item_weights, tf.float32), items) * mask  # R = 1
        return FoldInTerms(item_factors, tf.cast(params.unobs_weight, tf.float32), d, self.targets(ratings))


class Explicit(Mode):
    """Observed ratings only (w0 = 0), a global mean and user/item biases solved with the factors."""

    name = "explicit"
    biases = True
    hyperparameters = ("scale_regularization",)
    search_ranges = {"regularization": (1e-3, 100.0, "log"), "scale_regularization": None}

    def targets(self, values, mean=0.0):
        return values - mean  # the item bias c_j is the solve's offset (layout ``bias_offsets``; fold-in below)

    def weighting(self, values, shape, stats, given=None):
        self._refuse_weights(given)
        if not stats.count:
            raise ValueError(
                "The explicit mode needs at least one rating: the global mean and the range of the predictions come "
                "from the training ratings. Received a training matrix with no entries."
            )
        ones = [np.ones(size, np.float32) for size in shape]  # d = R_i C_j = 1
        with np.errstate(over="ignore"):  # an r - mu beyond float32 is refused by the layout's overflow check
            targets = self.targets(np.asarray(values, np.result_type(values, np.float32)), stats.mean)
        return Weighting(0.0, targets, *ones, None, stats.mean, (stats.low, stats.high))

    def fold_in_terms(self, item_factors, items, ratings, mask, params):
        table = tf.concat([item_factors, tf.ones_like(item_factors[:, :1])], axis=1)
        targets = self.targets(ratings, tf.cast(params.global_mean, tf.float32))
        targets -= tf.gather(tf.cast(params.item_bias, tf.float32), items)
        return FoldInTerms(table, tf.constant(0.0), mask, targets * mask)  # d = 1


class Implicit(Mode):
    """Preference 1 on observed cells with confidence 1 + alpha r, preference 0 with confidence 1 elsewhere."""

    name = "implicit"
    ranked = True
    hyperparameters = ("alpha", "scale_regularization")
    search_ranges = {"regularization": (1e-3, 100.0, "log"), "alpha": (0.01, 100.0, "log")}

    lowest_rating = 0.0
    invalid_reason = "is negative; the implicit mode needs ratings >= 0 (the confidence of a rating r is 1 + alpha * r)"

    def weighting(self, values, shape, stats, given=None):
        self._refuse_weights(given)
        values = np.asarray(values)
        self.refuse_invalid(values, "A")
        # d = alpha r in float64, so that a product beyond float32 is reported as an overflow by the layout.
        d = self.confidence(np.asarray(values, np.float64), self.config.alpha)
        return Weighting(1.0, self.targets(values), None, None, d, 0.0, (-np.inf, np.inf))

    def targets(self, values, mean=0.0):
        return values * 0 + 1  # the preference of an observed cell

    def confidence(self, values, alpha):
        return alpha * values

    def fold_in_terms(self, item_factors, items, ratings, mask, params):
        d = self.confidence(ratings, tf.cast(params.alpha, tf.float32))
        return FoldInTerms(item_factors, tf.constant(1.0), d, self.targets(ratings) * mask)


def check_training(ratings: Ratings, train: Ratings, config, stats: Statistics | None = None) -> None:
    """Checks the ratings against the hyperparameters before training, naming the line (or the ids) of an entry
    that the solver would reject in the middle of a sweep; warns about a rank the data cannot use.

    Args:
        ratings: all ratings as read (with ``first_line`` when they come from a file).
        train: the training part of ``ratings``; the mode's weights come from its statistics, as in training.
        config: the run's ``WALSConfig``.
        stats: ``Statistics`` of every worker's training entries (default: those of ``train``).

    Raises:
        RatingsError: negative ratings in the implicit mode (anywhere: they have no confidence 1 + alpha r), or a
            training entry whose weighted rating (w0 + d_ij) a_ij, weight d_ij or the solver's scaled weighted
            rating (w0 + d_ij) a_ij / sqrt(C_j) overflows float32.
    """
    mode = mode_of(config)
    stats = stats or statistics(train.items, train.values, train.num_items)
    invalid = np.flatnonzero(mode.invalid_ratings(ratings.values))
    if invalid.size:
        raise RatingsError(
            f"{where(ratings, ratings, invalid[0])}: rating {ratings.values[invalid[0]]:g} {mode.invalid_reason} "
            f"({invalid.size} such rating(s) in all)",
            line_of(ratings, ratings, invalid[0]),
        )
    if train.nnz:
        bad = _overflowing(train, mode, stats)
        if bad.size:
            entry = bad[0]
            weighting = mode.weighting(train.values[[entry]], train.shape, stats)
            weighted = weighting.observed_weight(train.users[[entry]], train.items[[entry]]) * weighting.targets
            raise RatingsError(
                f"{where(ratings, train, entry)}: rating {train.values[entry]:g} gives a weighted rating "
                f"(w0 + d) a = {weighted[0]:.4g} that overflows float32 in --mode {config.mode}; lower the ratings' "
                f"scale or the weights (--unobs_weight, --feature_wt_factor, --alpha) ({bad.size} such training "
                "rating(s) in all)",
                line_of(ratings, train, entry),
            )
    rank = min(ratings.num_users, ratings.num_items)
    if config.latent_factors > rank:
        logger.warning(
            "--latent_factors %d is more than the %d %s (the data has %d users x %d items): U V' has rank %d at "
            "most, so %d of the factors add no fit and only cost time (k x k solves); training goes on, since "
            "--regularization > 0 keeps every system solvable",
            config.latent_factors,
            rank,
            "items" if ratings.num_items <= ratings.num_users else "users",
            ratings.num_users,
            ratings.num_items,
            rank,
            config.latent_factors - rank,
        )


def _overflowing(train: Ratings, mode: Mode, stats: Statistics) -> np.ndarray:
    """Entries of ``train`` whose float32 solver inputs overflow: (w0 + d) a, d, and (w0 + d) a / sqrt(C_j)
    (the separable layout's scaling), with the weights of ``mode`` as training computes them."""
    weighting = mode.weighting(train.values, train.shape, stats)
    observed = weighting.observed_weight(train.users, train.items)  # w0 + d
    weighted = np.abs(observed * weighting.targets)
    observed -= weighting.unobserved_weight  # d
    bad = ~(weighted < FLOAT32_MAX) | ~(observed < FLOAT32_MAX)
    del observed
    if weighting.col_weights is not None:
        root = np.sqrt(weighting.col_weights[train.items].astype(np.float64))
        root[root == 0] = 1.0
        bad |= ~(np.divide(weighted, root, out=weighted) < FLOAT32_MAX)
    return np.flatnonzero(bad)


MODES: dict[str, type[Mode]] = {cls.name: cls for cls in (Tf1, Explicit, Implicit)}


def mode_of(config) -> Mode:
    """The ``Mode`` object of ``config.mode``, bound to ``config``."""
    return MODES[config.mode](config)
