"""The extraction query (pipeline/sql/web_views.sql), transpiled by sqlglot and run on DuckDB, against hand counts."""

import pytest

pytest.importorskip("duckdb")
pytest.importorskip("sqlglot")

from pipeline import query, sample  # noqa: E402


def _hit(time, number, kind="PAGE", **dimensions):
    return {
        "time": time,
        "hitNumber": number,
        "type": kind,
        "customDimensions": [{"index": int(k[2:]), "value": v} for k, v in dimensions.items()],
    }


#: Three visitors. Visitor 0001's second visit lists its hits out of time order; visitor 0003's only PAGE hit
#: has no successor in its own visit (a query partitioned by visit number alone would give it 0002's next hit).
SESSIONS = [
    {
        "fullVisitorId": "0001",
        "visitNumber": 1,
        "date": "20170801",
        "hits": [
            _hit(0, 1, cd10="a", cd3="x"),
            _hit(1500, 2, "EVENT", cd10="event"),  # not a PAGE hit: neither a row nor a successor
            _hit(4000, 3, cd10="b"),
            _hit(9000, 4, cd3="y"),  # no dimension 10: dropped, but it ends b's time on page
            _hit(12000, 5, cd10="a"),  # last PAGE hit of the visit: dropped
        ],
    },
    {
        "fullVisitorId": "0001",
        "visitNumber": 2,
        "date": "20170802",
        "hits": [_hit(7000, 2, cd10="a"), _hit(0, 1, cd10="c"), _hit(8000, 3, cd10="d")],
    },
    {
        "fullVisitorId": "0002",
        "visitNumber": 1,
        "date": "20170801",
        "hits": [_hit(0, 1, cd10="b"), _hit(2500, 2, cd10="a"), _hit(3000, 3, cd10="b")],
    },
    {"fullVisitorId": "0003", "visitNumber": 1, "date": "20170801", "hits": [_hit(100, 1, cd10="a")]},
    {
        "fullVisitorId": "0002",
        "visitNumber": 2,
        "date": "20170805",
        "hits": [_hit(0, 1, cd10="c"), _hit(1000, 2), _hit(1200, 3, cd10="c")],
    },
]

#: By hand: each PAGE hit with dimension 10 and a later PAGE hit in its visit, time to that hit.
EXPECTED = sorted(
    [
        ("0001", "a", 4000),  # visit 1: 0 -> 4000 (the EVENT at 1500 does not count)
        ("0001", "b", 5000),  # 4000 -> 9000
        ("0001", "c", 7000),  # visit 2, in time order: c at 0 -> a at 7000
        ("0001", "a", 1000),  # 7000 -> 8000; d at 8000 is last
        ("0002", "b", 2500),
        ("0002", "a", 500),
        ("0002", "c", 1000),  # 20170805: c at 0 -> the hit without dimension at 1000
    ]
)


@pytest.fixture(params=[".parquet", ".csv", ".jsonl"])
def export(request, tmp_path):
    return sample.write_export(SESSIONS, str(tmp_path / f"ga{request.param}"))


def _rows(frame):
    assert list(frame.columns) == list(query.COLUMNS)
    return sorted((str(c), str(i), int(t)) for c, i, t in frame.itertuples(index=False))


def test_query_matches_hand_count(export):
    assert _rows(query.web_views(export)) == EXPECTED


def test_date_range_and_custom_dimension(export):
    august_1_2 = [row for row in EXPECTED if row != ("0002", "c", 1000)]
    assert _rows(query.web_views(export, start_date="20170801", end_date="20170802")) == august_1_2
    assert _rows(query.web_views(export, start_date="20170805", end_date="20170805")) == [("0002", "c", 1000)]
    # Dimension 3: x at 0 -> 4000 and y at 9000 -> 12000 in 0001's first visit.
    assert _rows(query.web_views(export, custom_dimension_index=3)) == [("0001", "x", 4000), ("0001", "y", 3000)]


def test_trainer_reader_accepts_the_output(tmp_path):
    from wals2 import data

    path = str(tmp_path / "web_views.csv")
    query.write_web_views(query.web_views(sample.write_export(SESSIONS, str(tmp_path / "ga.parquet"))), path)
    with open(path) as handle:
        assert handle.readline().strip() == "clientId,contentId,timeOnPage"
        assert "0001," in handle.read()  # the visitor id is written as text, leading zeros kept
    ratings = data.read_web_views(path)
    got = {(str(u), str(i)): float(v) for u, i, v in ratings.to_frame().itertuples(index=False)}
    summed = {}
    for client, content, seconds in EXPECTED:
        key = (str(int(client)), content)  # wals2 maps all-integer ids to integers
        summed[key] = summed.get(key, 0.0) + seconds
    assert got == summed
    assert got[("1", "a")] == 5000.0  # 4000 + 1000: summed per pair, as TF1 did


def test_bigquery_text_and_parameters():
    sql = query.render("my-project", "GA360", "ga_sessions_*")
    assert "`my-project.GA360.ga_sessions_*`" in sql
    assert "${" not in sql and "@custom_dimension_index" in sql and "@start_date" in sql
    import sqlglot

    sqlglot.parse_one(sql, read="bigquery")  # valid BigQuery syntax
    params = {p["name"]: p for p in query.bigquery_parameters(custom_dimension_index=10, start_date="20170801")}
    assert params["custom_dimension_index"]["parameterType"]["type"] == "INT64"
    assert params["custom_dimension_index"]["parameterValue"]["value"] == "10"
    assert params["end_date"]["parameterValue"]["value"] == query.LAST_DATE


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"start_date": "2017-08-01"}, "start_date"),
        ({"end_date": "20171301"}, "calendar date"),
        ({"start_date": "20170802", "end_date": "20170801"}, "not be after"),
        ({"custom_dimension_index": "10"}, "custom_dimension_index"),
    ],
)
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        query.parameters(**kwargs)


def test_bad_table_name_and_export(tmp_path):
    with pytest.raises(ValueError, match="dataset"):
        query.render("p", "d`; DROP TABLE x", "t")
    with pytest.raises(FileNotFoundError, match="missing.parquet"):
        query.web_views(str(tmp_path / "missing.parquet"))
    odd = tmp_path / "ga.txt"
    odd.write_text("x")
    with pytest.raises(ValueError, match="should end in"):
        query.web_views(str(odd))
    flat = tmp_path / "flat.csv"
    flat.write_text("clientId,contentId,timeOnPage\n1,a,3\n")
    with pytest.raises(ValueError, match=r"missing column\(s\) \['fullVisitorId', 'visitNumber', 'date', 'hits'\]"):
        query.web_views(str(flat))
    broken = tmp_path / "broken.csv"
    broken.write_text('fullVisitorId,visitNumber,date,hits\n1,one,20170801,"[]"\n')
    with pytest.raises(ValueError, match="broken.csv: the query failed"):
        query.web_views(str(broken))


def test_imports_stay_light():
    import subprocess
    import sys

    from conftest import ROOT

    checks = {
        # The library never imports the pipeline layer.
        "import wals2": ("pipeline", "duckdb", "sqlglot", "kfp"),
        # The local flow and the gate import TensorFlow, DuckDB and kfp only when they run.
        "import pipeline.local, pipeline.gate, pipeline.query, pipeline.sample, pipeline.vertex": (
            "tensorflow",
            "duckdb",
            "sqlglot",
            "kfp",
            "google_cloud_pipeline_components",
        ),
    }
    for statement, heavy in checks.items():
        code = f"import sys\n{statement}\nprint([m for m in {heavy!r} if m in sys.modules])"
        out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip().splitlines()[-1] == "[]", statement
