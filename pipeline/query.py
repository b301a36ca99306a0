"""The web-views extraction query (``sql/web_views.sql``): render it for BigQuery, or run it on DuckDB over a local
GA360 sessions export.

One SQL text serves both: BigQuery runs it as written (query parameters ``@custom_dimension_index``,
``@start_date``, ``@end_date``); DuckDB runs the same text transpiled by sqlglot, the parameters bound by name.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import string
from importlib import resources

logger = logging.getLogger(__name__)

SQL_FILE = "web_views.sql"
#: Columns of the query's result, in order: the header ``wals2.data.read_web_views`` expects.
COLUMNS = ("clientId", "contentId", "timeOnPage")
#: TF1's DAG read the article id from hit-level custom dimension 10.
DEFAULT_CUSTOM_DIMENSION = 10
#: The whole ``date`` range (GA's export writes dates as YYYYMMDD strings).
FIRST_DATE, LAST_DATE = "00010101", "99991231"
#: The nested ``hits`` column as DuckDB reads it from a CSV export (JSON text; only the fields the query uses).
HITS_TYPE = (
    'STRUCT("time" BIGINT, hitNumber BIGINT, "type" VARCHAR, '
    'customDimensions STRUCT("index" BIGINT, value VARCHAR)[])[]'
)
#: Where a local export is registered in DuckDB, as ``${project}.${dataset}.${table}``.
LOCAL_TABLE = {"project": "memory", "dataset": "main", "table": "ga_sessions"}
EXPORT_FORMATS = (".parquet", ".csv", ".csv.gz", ".jsonl", ".ndjson", ".json")

_IDENTIFIER = re.compile(r"^[A-Za-z0-9_\-*]+$")
_DATE = re.compile(r"^\d{8}$")


def sql_text() -> str:
    """The query as shipped in the package, with its ``${project}.${dataset}.${table}`` placeholders."""
    return resources.files("pipeline").joinpath("sql").joinpath(SQL_FILE).read_text(encoding="utf-8")


def render(project: str, dataset: str, table: str) -> str:
    """The BigQuery query for table ``project.dataset.table`` (``table`` may end in ``*``, a wildcard table).

    Raises:
        ValueError: a name holds characters other than letters, digits, ``_``, ``-`` (and ``*`` in ``table``).
    """
    for name, value in (("project", project), ("dataset", dataset), ("table", table)):
        if not isinstance(value, str) or not _IDENTIFIER.match(value) or ("*" in value and name != "table"):
            raise ValueError(
                f"`{name}` should be a BigQuery name (letters, digits, _ and -; a trailing * in table). "
                f"Received: {name}={value!r}"
            )
    return string.Template(sql_text()).substitute(project=project, dataset=dataset, table=table)


def check_date(name: str, value: str) -> str:
    """``value`` if it is a YYYYMMDD calendar date (or the open bounds ``FIRST_DATE``/``LAST_DATE``)."""
    if not isinstance(value, str) or not _DATE.match(value):
        raise ValueError(f"`{name}` should be a date as YYYYMMDD. Received: {name}={value!r}")
    if value not in (FIRST_DATE, LAST_DATE):
        try:
            datetime.datetime.strptime(value, "%Y%m%d")
        except ValueError:
            raise ValueError(f"`{name}` should be a calendar date as YYYYMMDD. Received: {name}={value!r}") from None
    return value


def parameters(
    custom_dimension_index: int = DEFAULT_CUSTOM_DIMENSION, start_date: str = FIRST_DATE, end_date: str = LAST_DATE
) -> dict:
    """The query's parameters by name, checked."""
    if isinstance(custom_dimension_index, bool) or not isinstance(custom_dimension_index, int):
        raise ValueError(
            "`custom_dimension_index` should be an integer. "
            f"Received: custom_dimension_index={custom_dimension_index!r}"
        )
    check_date("start_date", start_date)
    check_date("end_date", end_date)
    if start_date > end_date:
        raise ValueError(
            f"`start_date` should not be after `end_date`. Received: start_date={start_date!r}, end_date={end_date!r}"
        )
    return {"custom_dimension_index": custom_dimension_index, "start_date": start_date, "end_date": end_date}


def bigquery_parameters(**values) -> list[dict]:
    """The parameters as BigQuery's REST ``queryParameters`` (the form ``BigqueryQueryJobOp`` takes)."""
    checked = parameters(**values)
    types = {"custom_dimension_index": "INT64", "start_date": "STRING", "end_date": "STRING"}
    return [
        {"name": name, "parameterType": {"type": types[name]}, "parameterValue": {"value": str(value)}}
        for name, value in checked.items()
    ]


def duckdb_sql() -> str:
    """The query transpiled from BigQuery to DuckDB by sqlglot, reading the table ``LOCAL_TABLE``."""
    import sqlglot

    return sqlglot.transpile(render(**LOCAL_TABLE), read="bigquery", write="duckdb")[0]


def register_export(connection, path: str) -> None:
    """Makes the GA sessions export at ``path`` the table ``LOCAL_TABLE`` of a DuckDB connection.

    Parquet and newline-delimited JSON keep the nested ``hits`` as BigQuery exports them; a CSV export holds
    ``hits`` as JSON text in one column (``fullVisitorId``, ``date`` are read as text, so ids keep leading zeros).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the name ends in none of ``EXPORT_FORMATS``, or a column the query needs is missing.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"GA export not found: {path}")
    lower = path.lower()
    csv = lower.endswith((".csv", ".csv.gz"))
    if lower.endswith(".parquet"):
        source = connection.read_parquet(path)
    elif csv:
        source = connection.read_csv(path, header=True, all_varchar=True)
    elif lower.endswith((".jsonl", ".ndjson", ".json")):
        source = connection.read_json(path, format="newline_delimited")
    else:
        raise ValueError(f"GA export {path}: the name should end in one of {EXPORT_FORMATS}")
    missing = [c for c in ("fullVisitorId", "visitNumber", "date", "hits") if c not in source.columns]
    if missing:
        raise ValueError(f"GA export {path}: missing column(s) {missing}; found {source.columns}")
    connection.register("ga_export", source)
    hits = f"CAST(CAST(hits AS JSON) AS {HITS_TYPE})" if csv else "hits"
    connection.execute(
        f"CREATE OR REPLACE VIEW {LOCAL_TABLE['table']} AS SELECT * REPLACE (CAST(fullVisitorId AS VARCHAR) AS "
        f"fullVisitorId, CAST(visitNumber AS BIGINT) AS visitNumber, CAST(date AS VARCHAR) AS date, {hits} AS hits) "
        "FROM ga_export"
    )


def web_views(export_path: str, **values):
    """Runs the query with DuckDB on a local GA export; returns a pandas DataFrame with ``COLUMNS``.

    Keyword arguments are the query parameters (``custom_dimension_index``, ``start_date``, ``end_date``).
    """
    import duckdb

    params = parameters(**values)
    connection = duckdb.connect()
    try:
        register_export(connection, export_path)
        frame = connection.execute(duckdb_sql(), params).df()
    except duckdb.Error as err:  # e.g. hits that are not GA-shaped JSON, a visitNumber that is not a number
        raise ValueError(f"GA export {export_path}: the query failed: {err}") from None
    finally:
        connection.close()
    logger.info("query: %d web-view rows from %s", len(frame), export_path)
    return frame


def write_web_views(frame, path: str) -> None:
    """Writes the query's rows as the trainer's web_views CSV (header ``clientId,contentId,timeOnPage``).

    Raises:
        ValueError: no rows (the trainer would have nothing to train on).
    """
    if len(frame) == 0:
        raise ValueError(f"the query returned no web views, so {path} would be empty; check the export and dates")
    frame.loc[:, list(COLUMNS)].to_csv(path, index=False)
