"""Scores of a factor model: the prediction of (user, item) pairs, item scores, cosine similarity of the factors and
the top k without seen items.

One formula for every mode and every caller (``WALSModel``, the engine's training error, fold-in and the
serving SavedModel):

    p_ij = mu + b_i + c_j + u_i . v_j

with mu = b = c = 0 in the modes without biases. Recommendations rank items by the unclipped p_ij; RMSE and the
``score`` signature use p_ij clipped to the rating range.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# Pairs per chunk when scoring (user, item) pairs: bounds the two gathered [chunk, k] matrices.
PAIR_CHUNK = 1 << 18


def pair_scores(user_factors, item_factors, user_bias, item_bias, mean, users, items) -> tf.Tensor:
    """p_ij (unclipped) for index vectors ``users``, ``items`` int [b]; float32 [b], in chunks of PAIR_CHUNK.

    Args:
        user_factors, item_factors: U [m, k], V [n, k].
        user_bias, item_bias: b [m], c [n].
        mean: mu, a scalar.
        users, items: int [b], indices into U and V.
    """
    users = tf.cast(users, tf.int32)
    items = tf.cast(items, tf.int32)
    n = tf.shape(users)[0]
    chunks = (n + PAIR_CHUNK - 1) // PAIR_CHUNK
    pad = chunks * PAIR_CHUNK - n
    users = tf.reshape(tf.pad(users, [[0, pad]]), [-1, PAIR_CHUNK])
    items = tf.reshape(tf.pad(items, [[0, pad]]), [-1, PAIR_CHUNK])

    def dots(chunk):
        dot = tf.reduce_sum(tf.gather(user_factors, chunk[0]) * tf.gather(item_factors, chunk[1]), axis=-1)
        return dot + tf.gather(user_bias, chunk[0]) + tf.gather(item_bias, chunk[1])

    scores = tf.map_fn(dots, (users, items), fn_output_signature=tf.float32)
    return tf.reshape(scores, [-1])[:n] + tf.cast(mean, tf.float32)


def item_scores(factors, user_bias, item_factors, item_bias, mean) -> tf.Tensor:
    """p_uj (unclipped) of b users against every item: float32 [b, n].

    Args:
        factors: the users' factors [b, k]; user_bias: their biases [b].
        item_factors: V [n, k]; item_bias: c [n]; mean: mu.
    """
    scores = tf.matmul(factors, item_factors, transpose_b=True) + item_bias[None, :]
    return scores + (user_bias + tf.cast(mean, tf.float32))[:, None]


def unit_rows(factors) -> tf.Tensor:
    """Each row of ``factors`` [r, k] divided by its L2 norm (a zero row stays zero): cosine similarity is a matmul."""
    factors = tf.convert_to_tensor(factors, tf.float32)
    norms = tf.norm(factors, axis=1, keepdims=True)
    return factors / tf.where(norms > 0, norms, tf.ones_like(norms))


def top_k_unseen(scores, seen_rows, seen_cols, k):
    """The k best items of each row of ``scores`` [b, n], the pairs (seen_rows[e], seen_cols[e]) excluded.

    Returns:
        (indices int32 [b, k], values float32 [b, k]), best first; slots beyond a row's unexcluded items (only
        when fewer than k remain) have value -inf.
    """
    where = tf.stack([tf.cast(seen_rows, tf.int64), tf.cast(seen_cols, tf.int64)], axis=1)
    fill = tf.fill(tf.shape(where)[:1], tf.constant(-np.inf, scores.dtype))
    top = tf.math.top_k(tf.tensor_scatter_nd_update(scores, where, fill), k=k)
    return top.indices, top.values
