"""Retraining pipeline: Google Analytics sessions -> web views -> trainer -> gate -> a new model version.

- ``pipeline.query``: the extraction query (``sql/web_views.sql``), for BigQuery or DuckDB.
- ``pipeline.gate``: the one promotion rule, shared by the local flow and the Vertex AI pipeline.
- ``pipeline.local``: the whole flow on one machine (``python -m pipeline.local``).
- ``pipeline.vertex``: the Vertex AI (Kubeflow Pipelines v2) pipeline (``pip install "wals2[pipeline]"``).
- ``pipeline.sample``: a seeded GA-shaped sample export.
"""
