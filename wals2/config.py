"""The one hyperparameter record of a WALS model, with TF1's names and effective defaults.

Every field is a hyperparameter of the factorisation. The trainer generates its command-line flags from these
fields (``--latent_factors``, ``--unobs_weight``, ...), so a TF1 tuning config ports 1:1, and ``config.json``
holds exactly ``WALSConfig.to_dict()``.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

from wals2 import validate

#: ``wt_type`` codes of TF1's ``wals.py``: ``LOG_RATINGS = 0`` (a power law, C_j = n_j^-e) and
#: ``LINEAR_RATINGS = 1`` (C_j = f / n_j). TF1's ``--wt_type`` help text had these two swapped.
LOG_RATINGS = 0
LINEAR_RATINGS = 1
WT_TYPE_NAMES = {"log": LOG_RATINGS, "linear": LINEAR_RATINGS}

INITS = ("normal", "scaled")
#: "tf1": TF1's weighting (unobserved cells are zero targets of weight w0). "explicit": observed entries only,
#: global mean + user and item biases, predictions clipped to the training ratings' range. "implicit":
#: Hu-Koren-Volinsky preferences (1 on observed cells, 0 elsewhere) with confidence 1 + alpha * r.
MODES = ("tf1", "explicit", "implicit")
SOLVERS = ("cholesky", "cg", "subspace")


def _field(default: Any, doc: str, **metadata: Any) -> Any:
    return dataclasses.field(default=default, metadata={"help": doc, **metadata})


@dataclasses.dataclass(frozen=True)
class WALSConfig:
    """Hyperparameters of weighted alternating least squares (TF1 ``WALSModel`` semantics).

    The model minimises, over row factors U (m x k) and column factors V (n x k),

        sum_{(i,j) observed} (w0 + R_i C_j) (a_ij - u_i.v_j)^2 + w0 sum_{(i,j) unobserved} (u_i.v_j)^2
            + lambda (|U|_F^2 + |V|_F^2)

    with w0 = ``unobs_weight``, lambda = ``regularization``, row weights R_i = 1 and item weights C_j from
    ``wt_type`` (or R = C = 0, plain ALS, when ``weights`` is False). That is ``mode="tf1"``; the other modes
    reuse the same closed-form sweep with other weights and targets:

    * ``"explicit"``: sum_obs (a_ij - mu - b_i - c_j - u_i.v_j)^2 + lambda_i (|u_i|^2 + b_i^2) + lambda_j (...),
      with mu the training mean, w0 = 0, and lambda_i = lambda (or lambda n_i with ``scale_regularization``).
    * ``"implicit"``: sum_all c_ij (p_ij - u_i.v_j)^2 + lambda (...), p_ij = 1 on observed cells and 0 elsewhere,
      c_ij = 1 + alpha r_ij on observed cells and 1 elsewhere (``unobs_weight`` and the TF1 weights unused).
    """

    mode: str = _field(
        "tf1",
        "Objective: 'tf1' (TF1 WALS weighting), 'explicit' (observed ratings only, with global mean and user/item "
        "biases, predictions clipped to the rating range) or 'implicit' (preference 1 on observed cells with "
        "confidence 1 + alpha * r, 0 elsewhere with confidence 1, as Spark's implicitPrefs and BigQuery ML).",
        choices=MODES,
    )
    latent_factors: int = _field(5, "k, the number of latent factors per user and item (TF1 default 5).")
    num_iters: int = _field(20, "Number of sweeps; one sweep solves every row, then every column (TF1 default 20).")
    regularization: float = _field(
        0.07, "lambda, the L2 weight on both factor matrices, not scaled by row counts (TF1 default 0.07)."
    )
    unobs_weight: float = _field(
        0.01, "w0, the weight of every unobserved cell (target 0), added to observed weights (TF1 default 0.01)."
    )
    wt_type: int = _field(
        LINEAR_RATINGS,
        "Item weight formula: 1 or 'linear' gives C_j = feature_wt_factor / n_j; 0 or 'log' gives the power law "
        "C_j = n_j ** -feature_wt_exp, with n_j the item's training ratings > 0 (C_j = 0 when n_j = 0). "
        "TF1's help text had the codes swapped; its effective default for ratings is 1 (linear).",
    )
    feature_wt_factor: float = _field(130.0, "f, the factor of the linear item weight f / n_j (TF1 default 130).")
    feature_wt_exp: float = _field(0.08, "e, the exponent of the power-law ('log') item weight (TF1 default 0.08).")
    alpha: float = _field(40.0, "Implicit mode: the confidence of an observed cell is 1 + alpha * r.")
    scale_regularization: bool = _field(
        False, "Multiply lambda by each row's number of ratings (ALS-WR, as Spark ALS does); explicit/implicit modes."
    )
    weights: bool = _field(
        True, "Use TF1's observed-entry weights w0 + R_i C_j; when False, every cell weighs w0 (plain ALS)."
    )
    init: str = _field(
        "normal",
        "Initial factors: 'normal' is TF1's N(0, 1); 'scaled' is N(0, 1/k), so u.v starts near N(0, 1).",
        choices=INITS,
    )
    seed: int = _field(0, "Seed of the factor initialisation (and of the trainer's train/test split).")
    solver: str = _field(
        "cholesky",
        "Row solver: 'cholesky' is the exact solve (batched Cholesky; rows shorter than 0.7 k through an L x L "
        "Woodbury system); 'cg' takes cg_steps conjugate-gradient steps from the previous factors (inexact; the "
        "implicit library's usual solver); 'subspace' is iALS++'s block coordinate descent from the previous "
        "factors, subspace_sweeps passes over blocks of subspace_block coordinates, each solved exactly (inexact "
        "per sweep, exact at convergence; O(L k b) per row instead of O(L k^2), for large k).",
        choices=SOLVERS,
    )
    cg_steps: int = _field(3, "Conjugate-gradient steps per row and half-sweep with solver='cg'.")
    subspace_block: int = _field(
        64,
        "b, the coordinates per block of solver='subspace' (a b x b Cholesky solve per block and row; b >= k is "
        "the exact solve).",
        aliases=("--subspace-block",),
    )
    subspace_sweeps: int = _field(
        1, "Passes over the blocks per row and half-sweep with solver='subspace'.", aliases=("--subspace-sweeps",)
    )
    compute_loss: bool = _field(False, "Compute TF1's objective after every sweep and report it as 'loss'.")
    batch_entries: int = _field(
        65536, "Gathered entries per solver sub-batch; sets the working set of one batched Gram (performance only)."
    )
    max_row_length: int = _field(
        2048, "Rows longer than this are cut into pieces whose partial Gramians are summed (performance only)."
    )

    def __post_init__(self) -> None:
        wt = self.wt_type
        if isinstance(wt, str):
            key = wt.strip().lower()
            if key in WT_TYPE_NAMES:
                wt = WT_TYPE_NAMES[key]
            elif key.lstrip("-").isdigit():
                wt = int(key)
        if isinstance(wt, bool) or not isinstance(wt, numbers.Integral) or wt not in (0, 1):
            raise ValueError(
                f"`wt_type` should be 0 ('log', power law) or 1 ('linear'). Received: wt_type={self.wt_type!r}"
            )
        object.__setattr__(self, "wt_type", int(wt))
        _check_int(self, "latent_factors", minimum=1)
        _check_int(self, "num_iters", minimum=1, why="0 sweeps would leave the random initial factors")
        _check_int(self, "seed", minimum=0)
        _check_int(self, "batch_entries", minimum=1)
        _check_int(self, "cg_steps", minimum=1)
        _check_int(self, "subspace_block", minimum=1)
        _check_int(self, "subspace_sweeps", minimum=1)
        _check_int(self, "max_row_length", minimum=1)
        _check_float(self, "regularization", positive=True, why="it keeps every k x k system positive definite")
        _check_float(self, "unobs_weight", positive=False)
        _check_float(self, "feature_wt_factor", positive=False)
        _check_float(self, "feature_wt_exp", positive=False)
        _check_float(self, "alpha", positive=False)
        if self.mode not in MODES:
            raise ValueError(f"`mode` should be one of {MODES}. Received: mode={self.mode!r}")
        for name in ("weights", "compute_loss", "scale_regularization"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"`{name}` should be a bool. Received: {name}={getattr(self, name)!r}")
        if self.init not in INITS:
            raise ValueError(f"`init` should be one of {INITS}. Received: init={self.init!r}")
        if self.solver not in SOLVERS:
            raise ValueError(f"`solver` should be one of {SOLVERS}. Received: solver={self.solver!r}")

    @property
    def wt_type_name(self) -> str:
        """``'linear'`` or ``'log'``."""
        return "linear" if self.wt_type == LINEAR_RATINGS else "log"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> WALSConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown WALSConfig fields {unknown}. Known fields: {sorted(known)}")
        return cls(**values)

    def replace(self, **changes: Any) -> WALSConfig:
        return dataclasses.replace(self, **changes)


def _check_int(config: WALSConfig, name: str, minimum: int, why: str = "") -> None:
    object.__setattr__(config, name, validate.integer(name, getattr(config, name), minimum, why=why))


def _check_float(config: WALSConfig, name: str, positive: bool, why: str = "") -> None:
    object.__setattr__(config, name, validate.real(name, getattr(config, name), positive, why))
