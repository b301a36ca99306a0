"""Reading, validating, mapping and splitting ratings; every bad input names the file and line or count."""

import dataclasses
import gzip
import pathlib
import re
import tempfile

import numpy as np
import pandas as pd
import pytest
from conftest import shared_file
from oracle import build_layouts

from wals2 import Ratings, RatingsError, WALSConfig, data, load_bundled, modes, read_ratings
from wals2.data import TextRange, Vocabulary, bundled_path, read_web_views
from wals2.weights import item_weights, resolve


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_tab_file_with_real_id_maps(tmp_path):
    path = write(tmp_path, "u.data", "10\t7\t4\t111\n3\t7\t5\t112\n10\t99\t1\t113\n")
    r = read_ratings(path)
    assert r.shape == (2, 2) and r.nnz == 3
    assert list(r.user_ids) == [3, 10] and list(r.item_ids) == [7, 99]  # sorted raw ids, index 0 = smallest
    frame = r.to_frame().sort_values(["user", "item"]).reset_index(drop=True)
    expected = pd.DataFrame({"user": [3, 10, 10], "item": [7, 7, 99], "rating": [5.0, 4.0, 1.0]})
    pd.testing.assert_frame_equal(frame, expected, check_dtype=False)
    assert list(r.user_index([10, 3])) == [1, 0]
    with pytest.raises(KeyError, match="unknown user id 4"):
        r.user_index([4])


def test_integer_ids_are_looked_up_exactly():
    """A fraction, a string that is not an integer or a bool is an unknown id of an integer vocabulary, never
    truncated to a known one; integer strings and integral floats name their integer, large ones exactly."""
    vocab = Vocabulary(np.array([1, 5, 2**53 + 1]), 3, "user_ids")
    assert list(vocab.index([5, 1])) == [1, 0] and list(vocab.index(["5", 1.0])) == [1, 0]
    assert list(vocab.index(np.array([str(2**53 + 1)]))) == [2]
    for raw, shown in (
        ([1.7], "1.7"),
        (["abc"], "'abc'"),
        ([True], "True"),
        ([True, 5], "True"),
        ([float("nan")], "nan"),
        (["5.0"], "'5.0'"),
        ([" 5"], "' 5'"),
        (["1e0"], "'1e0'"),
        ([2**70], str(2**70)),
        (np.array([2**64 - 4], np.uint64), str(2**64 - 4)),
    ):
        with pytest.raises(KeyError, match=re.escape(f"unknown user id {shown}")):
            vocab.index(raw)
    narrow = Vocabulary(np.array([0, 5], np.int32), 2, "user_ids")
    with pytest.raises(KeyError, match=f"unknown user id {2**32 + 5}"):  # not wrapped around to 5
        narrow.index(np.array([2**32 + 5]))
    with pytest.raises(ValueError, match="vocabulary's type int64. Received 'x'"):
        vocab.extended(["x"])


def test_double_colon_csv_headers_and_gzip(tmp_path):
    r1 = read_ratings(write(tmp_path, "ratings.dat", "1::1193::5::978300760\n2::661::3::978302109\n"), "::")
    assert list(r1.item_ids) == [661, 1193] and list(r1.values) == [5.0, 3.0]
    csv = "userId,movieId,rating,timestamp\r\n1,31,2.5,1260759144\r\n1,1029,3.0,1260759179\r\n"
    r2 = read_ratings(write(tmp_path, "ratings.csv", csv), ",", headers=True)
    assert r2.nnz == 2 and list(r2.values) == [2.5, 3.0]
    gz = tmp_path / "r.csv.gz"
    gz.write_bytes(gzip.compress(csv.encode()))
    assert read_ratings(str(gz), ",", headers=True).nnz == 2


def test_string_ids_are_kept_as_strings(tmp_path):
    r = read_ratings(write(tmp_path, "s.tsv", "alice\tm1\t3\nbob\tm2\t4\n"))
    assert list(r.user_ids) == ["alice", "bob"] and r.user_ids.dtype.kind == "U"


@pytest.mark.parametrize(
    "text, kwargs, message",
    [
        ("", {}, r"empty \(no data\)"),
        ("user,item,rating\n", {"delimiter": ",", "headers": True}, r"empty \(only a header line\)"),
        ("1::2::3::4\n", {}, r"found 1 column\(s\).*ratings.dat files use --delimiter '::'"),
        ("1,2,3\n", {}, r"found 1 column\(s\).*use --delimiter ,"),
        ("1\t2\n", {}, r"found 2 column\(s\)"),
        ("1\t2\t3\n1\t3\tfour\n", {}, r"line 2: rating 'four' is not a finite number"),
        ("1\t2\t3\n1\t3\tnan\n2\t3\tNaN\n", {}, r"line 2: rating 'nan' is not a finite number \(2 such row"),
        ("1\t2\t3\n1\t3\t4\n1\t2\t5\n", {}, r"1 duplicate \(user, item\) pair.*user 1, item 2 on lines \[1, 3\]"),
        ("1\t2\t\n", {}, r"line 1: no rating \(a missing or empty field\)"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, text, kwargs, message):
    path = write(tmp_path, "bad.txt", text)
    with pytest.raises(RatingsError, match=message) as err:
        read_ratings(path, **kwargs)
    assert path in str(err.value)


def test_header_line_numbers_count_the_header(tmp_path):
    path = write(tmp_path, "h.csv", "u,i,r\n1,2,3\n1,3,x\n")
    with pytest.raises(RatingsError, match="line 3: rating 'x'"):
        read_ratings(path, ",", headers=True)


@pytest.mark.parametrize(
    "text, kwargs, message",
    [
        # the case: four blank lines before the bad row on file line 8
        ("1\t2\t3\n\n\n1\t3\t4\n\n\n\n1\t4\tx\n", {}, r"line 8: rating 'x'"),
        ("u,i,r\n\n1,2,3\n\n1,2,5\n", {"delimiter": ",", "headers": True}, r"on lines \[3, 5\]"),
        ("\n\n1::2::3\n\n-1::3::4\n", {"delimiter": "::"}, r"line 5: user id -1 is negative"),
        ("1\t2\t3\n\n\n2\t\t3\n", {}, r"line 4: empty item id"),
        ("1\t2\t3\n\n1\t3\t1e39\n", {}, r"line 3: rating '1e39' overflows float32"),
        ("1\t2\t3\n\n\n2\t3\n", {}, r"line 4: no rating \(a missing or empty field\)"),
        ("1\t2\t3\n\n2\t3\t4\t5\t6\n", {}, r"line 3: 5 fields with delimiter '\\t', where the lines before have 3"),
        ("\n\n1\t2\t3\t4\t5\n", {}, r"line 3: 5 fields with delimiter '\\t', expected user"),
        ("\n\n\n", {}, r"empty|only blank lines"),
    ],
)
def test_blank_lines_count_in_the_line_numbers(tmp_path, text, kwargs, message):
    path = write(tmp_path, "blank.txt", text)
    with pytest.raises(RatingsError, match=message):
        read_ratings(path, **kwargs)


def test_line_number_skips_blank_lines_like_a_hand_count():
    # lines 1..9 with 2, 3 and 6 blank: the kept lines are 1, 4, 5, 7, 8, 9
    assert data.line_number(1, np.array([2, 3, 6]), np.arange(6)).tolist() == [1, 4, 5, 7, 8, 9]
    assert data.line_number(2, None, np.arange(3)).tolist() == [2, 3, 4]
    ratings = read_ratings(write(pathlib.Path(tempfile.mkdtemp()), "r.tsv", "\n1\t1\t1\n\n2\t2\t2\n"))
    assert ratings.line(np.arange(2)).tolist() == [2, 4] and ratings.nnz == 2


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="ratings file not found: .*nope.tsv"):
        read_ratings(str(tmp_path / "nope.tsv"))
    with pytest.raises(RatingsError, match="is a directory"):
        read_ratings(str(tmp_path))


def test_split_is_tf1_sized_seeded_and_disjoint():
    rng = np.random.default_rng(0)
    n = 1005
    cells = rng.choice(100 * 80, size=n, replace=False)
    u, i = np.divmod(cells, 80)
    r = Ratings(u.astype(np.int32), i.astype(np.int32), np.ones(n, np.float32), np.arange(100), np.arange(80))
    train, test = r.split(0.1, seed=4)
    assert test.nnz == 100 and train.nnz == 905  # floor(N / 10), as TF1
    again_train, again_test = r.split(0.1, seed=4)
    np.testing.assert_array_equal(test.pairs(), again_test.pairs())
    assert not set(map(tuple, train.pairs())) & set(map(tuple, test.pairs()))
    assert train.shape == test.shape == r.shape
    assert not np.array_equal(r.split(0.1, seed=5)[1].pairs(), test.pairs())
    with pytest.raises(ValueError, match="`test_fraction` should be in"):
        r.split(1.0)


def test_bundled_latest_small_is_complete():
    r = load_bundled()
    assert r.shape == (610, 9724) and r.nnz == 100836
    assert sorted(set(np.unique(r.values).tolist())) == [0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5]


def test_bundled_matches_the_shared_original():
    original = pd.read_csv(shared_file("ml-latest-small", "ratings.csv"))
    r = load_bundled()
    frame = r.to_frame()
    assert len(frame) == len(original)
    np.testing.assert_array_equal(frame["user"].to_numpy(), original["userId"].to_numpy())
    np.testing.assert_array_equal(frame["item"].to_numpy(), original["movieId"].to_numpy())
    np.testing.assert_array_equal(frame["rating"].to_numpy(), original["rating"].to_numpy(np.float32))


def test_ml100k_is_read_like_tf1():
    r = read_ratings(str(shared_file("ml-100k", "u.data")))
    assert r.shape == (943, 1682) and r.nnz == 100000
    assert list(r.user_ids[:3]) == [1, 2, 3]


def test_web_views_sum_time_per_pair(tmp_path):
    text = "clientId,contentId,timeOnPage\nc2,a,10\nc1,b,5\nc2,a,7\nc1,a,1\n"
    r = read_web_views(write(tmp_path, "views.csv", text))
    assert list(r.user_ids) == ["c1", "c2"] and list(r.item_ids) == ["a", "b"]
    frame = r.to_frame().set_index(["user", "item"])["rating"].to_dict()
    assert frame == {("c1", "a"): 1.0, ("c1", "b"): 5.0, ("c2", "a"): 17.0}
    with pytest.raises(RatingsError, match=r"missing column\(s\) \['timeOnPage'\]"):
        read_web_views(write(tmp_path, "v2.csv", "clientId,contentId\nc,a\n"))


def test_item_weights_hand_computed():
    counts = np.array([0, 1, 4, 100])
    np.testing.assert_allclose(item_weights(counts, 1, 130.0, 0.08), [0, 130.0, 32.5, 1.3], rtol=1e-6)
    np.testing.assert_allclose(item_weights(counts, 0, 130.0, 0.5), [0, 1.0, 0.5, 0.1], rtol=1e-6)


def test_weight_arguments():
    assert resolve(None, 3, "row_weights") is None
    np.testing.assert_array_equal(resolve(2.0, 3, "row_weights"), [2, 2, 2])
    with pytest.raises(ValueError, match="`col_weights` should be non-negative"):
        resolve(-1.0, 3, "col_weights")
    with pytest.raises(ValueError, match=r"shape \(3,\). Received shape \(2,\)"):
        resolve([1.0, 2.0], 3, "row_weights")


@pytest.mark.parametrize(
    "text, message",
    [
        ("1\t2\t3\n1e30\t2\t4\n-4\t3\t5\n", r"line 2: user id '1e30' is a number but not an integer .*\(2 such row"),
        ("1\t2\t3\n2\t2.5\t4\n", r"line 2: item id '2.5' is a number but not an integer"),
        ("alice\tm1\t3\n-4\tm2\t4\n", r"line 2: user id '-4' is a number but not an integer"),  # among names
        ("9223372036854775808\t1\t3\n", r"line 1: user id '9223372036854775808' is a number but not an integer"),
        ("1\t2\t3\n1\t3\t-1e39\n", r"line 2: rating '-1e39' overflows float32 \(ratings are stored as float32"),
        ("1\t2\t3\n2\t\xe9t\xe9\t4\n", r"line 2: b'\\xe9t\\xe9\\t4\\n' is not UTF-8 text"),
        ("user\titem\trating\n1\t2\t3\n", r"line 1: rating 'rating' is not .*; if line 1 is a header, pass --headers"),
    ],
)
def test_ids_overflow_encoding_and_header_hint(tmp_path, text, message):
    path = tmp_path / "r.tsv.gz"  # through gzip, so that the line search reads the decompressed text
    path.write_bytes(gzip.compress(text.encode("latin-1")))
    with pytest.raises(RatingsError, match=message) as err:
        read_ratings(str(path))
    assert str(path) in str(err.value)


def test_numeric_ids_mixed_with_names_and_the_largest_int64_stay_valid(tmp_path):
    r = read_ratings(write(tmp_path, "m.tsv", "alice\t12\t3\nbob\tm2\t4\n"))
    assert list(r.item_ids) == ["12", "m2"]
    r = read_ratings(write(tmp_path, "big.tsv", "9223372036854775807\t1\t3\n"))
    assert r.user_ids.tolist() == [2**63 - 1]


@pytest.mark.parametrize("delimiter", ["\\t", "tab", "TAB", "<>", " | ", "..", "\\s"])
def test_any_delimiter_reads_as_a_literal_string(tmp_path, delimiter):
    sep = "\t" if delimiter.lower() in ("\\t", "tab") else delimiter
    rows = [(1, 10, 4.0), (2, 10, 3.5), (2, 30, 1.0)]
    r = read_ratings(write(tmp_path, "d.txt", "".join(f"{u}{sep}{i}{sep}{v}\n" for u, i, v in rows)), delimiter)
    assert sorted(zip(r.user_ids[r.users].tolist(), r.item_ids[r.items].tolist(), r.values.tolist())) == rows


def test_long_fields_are_cut_in_messages(tmp_path):
    long = "y" * 1_000_000
    with pytest.raises(RatingsError) as err:
        read_ratings(write(tmp_path, "l.tsv", f"1\t2\t3\n1\t{long}\t4\n1\t{long}\t5\n"))
    text = str(err.value)
    assert len(text) < 400 and "user 1, item 'yyyy" in text and "(1,000,000 characters)" in text
    assert data.quote("abc") == "'abc'" and data.quote("z" * 61) == "'" + "z" * 59 + "... (61 characters)"


def solver_accepts(train, config):
    """The layout's own check (``layout.build_half`` of both halves) with the mode's weights."""
    mode = modes.mode_of(config)
    w = mode.weighting(train.values, train.shape, modes.statistics(train.items, train.values, train.num_items))
    try:
        build_layouts(
            train.users,
            train.items,
            w.targets,
            train.shape,
            w.row_weights,
            w.col_weights,
            w.unobserved_weight,
            entry_weights=w.entry_weights,
            bias_offsets=mode.biases,
        )
    except ValueError as err:
        assert "overflow float32" in str(err)
        return False
    return True


@pytest.mark.parametrize(
    "mode, flags",
    [
        ("tf1", {}),
        ("tf1", {"feature_wt_factor": 1e-6}),
        ("tf1", {"wt_type": 0, "unobs_weight": 1.0}),
        ("implicit", {}),
        ("explicit", {}),
    ],
)
def test_check_training_refuses_exactly_what_the_solver_refuses(mode, flags):
    # 6 users x 4 items, every item with positive ratings (TF1's separable layout); item 3 has a single rating.
    cells = [(u, i) for u in range(6) for i in range(3) if (u + i) % 3] + [(0, 3)]
    outcomes = set()
    for scale in [*10.0 ** np.arange(34, 38.5, 0.25), 2e38, 2.5e38, 3e38, 3.3e38, 3.4e38]:
        values = np.array([1.0 + (u * 7 + i) % 5 for u, i in cells]) * scale / 5
        if mode == "explicit":  # r - mu overflows when r and the mean mu lie far apart
            values[0], values[1:] = scale, -values[1:]
        if np.abs(values).max() > np.finfo(np.float32).max:
            continue
        users, items = map(np.asarray, zip(*cells))
        r = Ratings(
            users.astype(np.int32),
            items.astype(np.int32),
            values.astype(np.float32),
            np.arange(6),
            np.arange(4),
            "m",
            first_line=1,
        )
        config = WALSConfig(mode=mode, **flags)
        accepted = solver_accepts(r, config)
        outcomes.add(accepted)
        if accepted:
            modes.check_training(r, r, config)
        else:
            with pytest.raises(RatingsError, match=r"m: line \d+ \(user \d, item \d\): rating .* overflows float32"):
                modes.check_training(r, r, config)
    assert outcomes == {True, False}  # the scales cross the solver's limit


def test_check_training_names_the_line_of_a_split_entry_and_warns_about_rank(caplog):
    r = read_ratings(bundled_path(), ",", headers=True)
    train, _, test = r.train_validation_test(0.0, 0.1, seed=0)
    entry = int(np.flatnonzero(train.item_counts()[train.items] == 1)[0])  # C_j = 130: 1e37 (w0 + C_j) > float32
    big = dataclasses.replace(train, values=train.values.copy())
    big.values[entry] = 1e37
    line = int(np.flatnonzero((r.users == train.users[entry]) & (r.items == train.items[entry]))[0]) + 2
    user, item = r.user_ids[train.users[entry]], r.item_ids[train.items[entry]]
    with pytest.raises(RatingsError, match=rf"ratings.csv.gz: line {line} \(user {user}, item {item}\): rating 1e\+37"):
        modes.check_training(r, big, WALSConfig())
    users, items = np.divmod(np.arange(15), 3)  # 5 users x 3 items, all rated
    small = Ratings(users.astype(np.int32), items.astype(np.int32), np.ones(15, np.float32), np.arange(5), np.arange(3))
    modes.check_training(small, small, WALSConfig(latent_factors=3))
    assert not caplog.records
    modes.check_training(small, small, WALSConfig(latent_factors=4))
    assert "--latent_factors 4 is more than the 3 items" in caplog.text


def test_web_views_blank_lines_count_in_the_line_numbers(tmp_path):
    path = write(tmp_path, "views.csv", "clientId,contentId,timeOnPage\n\na,x,3\n\n\nb,y,soon\n")
    with pytest.raises(RatingsError, match=r"line 6: timeOnPage 'soon' is not a finite number"):
        read_web_views(path)


def test_repeated_pairs_counts_repeats_and_finds_the_first_pair_in_input_order():
    rng = np.random.default_rng(3)
    rows, cols = rng.integers(0, 6, 200), rng.integers(0, 5, 200)
    seen, naive = set(), 0
    for pair in zip(rows.tolist(), cols.tolist()):
        naive += pair in seen
        seen.add(pair)
    count, first = data.repeated_pairs(rows, cols, 5)
    smallest = min(p for p in seen if sum(1 for q in zip(rows.tolist(), cols.tolist()) if q == p) > 1)
    at = [i for i, q in enumerate(zip(rows.tolist(), cols.tolist())) if q == smallest][:2]
    assert count == naive and first.tolist() == at
    count, first = data.repeated_pairs(np.arange(4), np.zeros(4, int), 1)
    assert count == 0 and first.size == 0


def test_the_model_refuses_a_matrix_with_a_repeated_entry():
    from scipy import sparse

    from wals2 import WALSModel

    coo = sparse.coo_array((np.ones(3), ([0, 1, 0], [1, 2, 1])), shape=(2, 3))
    with pytest.raises(ValueError, match=r"has 1 duplicate \(row, column\) entries"):
        WALSModel(2, 3, latent_factors=2).fit(coo, epochs=1, verbose=0)


def test_a_fourth_column_that_is_not_all_numbers_is_not_used_as_timestamps(tmp_path, caplog):
    for name, text, why in (
        ("missing.tsv", "1\t10\t5\t100\n2\t20\t4\n3\t30\t2\t5\n", "line 2: no fourth field"),
        ("word.tsv", "1\t10\t5\t100\n2\t20\t4\tabc\n", "line 2: the fourth field 'abc' is not a number"),
    ):
        ratings = read_ratings(write(tmp_path, name, text))
        assert ratings.nnz == text.count("\n") and ratings.timestamps is None
        assert f"{why}, so the fourth column is not used as timestamps" in caplog.text
        with pytest.raises(ValueError, match="fourth field as timestamps only when it is a number on every line"):
            ratings.train_validation_test(0.0, 0.5, strategy="time")


def test_a_workers_lines_are_numbered_as_in_the_file(tmp_path):
    """A worker's ``TextRange`` holds the header line, then its lines from file line ``first_line`` on."""
    path = write(tmp_path, "part.tsv", "")
    text = TextRange(b"u\ti\tr\n1\t2\t3\n1\t3\t3\t4\t5\n", 10)
    with pytest.raises(RatingsError, match="line 11: 5 fields"):
        read_ratings(path, headers=True, text=text)
    with pytest.raises(RatingsError, match=r"line 11: no rating \(a missing or empty field\)"):
        read_ratings(path, headers=True, text=TextRange(b"u\ti\tr\n1\t2\t3\n1\t3\n", 10))
