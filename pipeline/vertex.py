"""The retraining pipeline on Vertex AI Pipelines (Kubeflow Pipelines v2), TF1's daily DAG rebuilt:

1. ``query``: the web-views query (``sql/web_views.sql``) as a BigQuery job, result in a table (WRITE_TRUNCATE);
2. ``export``: that table as one CSV with a header under ``<bucket>/runs/<pipeline job id>/``;
3. ``train``: a Vertex AI custom training job running the project's container, ``python -m trainer.task
   --data-type web_views --use-optimized --validation-fraction 0.1``, output in ``<run>/job/`` (``model/`` holds
   the SavedModel, ``metrics.json`` beside it);
4. ``gate``: ``python -m pipeline.gate check`` in the same container, the new ``metrics.json`` against the served
   model's (``served_metrics_uri``) and an optional threshold; the rest runs only if it passed:
5. ``upload``: the SavedModel directory as a Vertex AI model served by ``python -m trainer.serve`` in the container;
6. ``deploy``: to ``endpoint_resource_name`` (or a new endpoint when empty), with all traffic;
7. ``record``: the new ``metrics.json`` copied to ``served_metrics_uri`` for the next run's gate.

Every step is retried 5 times, 5 minutes apart, as TF1's DAG was. The container image and the GA table are fixed
when compiling; the rest are pipeline parameters. Needs ``pip install "wals2[pipeline]"`` (kfp and
google-cloud-pipeline-components); ``python -m pipeline.vertex --help``.
"""

import argparse
import logging
import sys
from typing import NamedTuple

from pipeline import query
from trainer import logs

logger = logging.getLogger(__name__)

PIPELINE_NAME = "wals2-retraining"
#: TF1's DAG: ``retries=5``, ``retry_delay=timedelta(minutes=5)``.
RETRIES, RETRY_DELAY = 5, "300s"
#: Daily at 21:00, as TF1's DAG (``schedule_interval='00 21 * * *'``).
DAILY_CRON = "0 21 * * *"
TRAINER_FLAGS = ["--data-type", "web_views", "--use-optimized", "--validation-fraction", "0.1"]
SERVING_CONTAINER = {
    "command": ["python", "-m", "trainer.serve"],
    "predictRoute": "/predict",
    "healthRoute": "/health",
    "ports": [{"containerPort": 8080}],
}


def export_table(project: str, location: str, dataset: str, table: str, bucket: str, run_id: str) -> NamedTuple(
    "Paths", [("train_file", str), ("job_dir", str), ("model_dir", str)]
):
    """Extracts ``project.dataset.table`` to ``<bucket>/runs/<run_id>/web_views.csv`` (one file with a header, as
    ``wals2.data.read_web_views`` reads it); returns that path and the training job's directories."""
    from collections import namedtuple

    from google.cloud import bigquery

    run = bucket.rstrip("/") + "/runs/" + run_id
    train_file = run + "/web_views.csv"
    config = bigquery.ExtractJobConfig(destination_format="CSV", print_header=True)
    bigquery.Client(project=project).extract_table(
        f"{project}.{dataset}.{table}", train_file, location=location, job_config=config
    ).result()
    return namedtuple("Paths", ["train_file", "job_dir", "model_dir"])(train_file, run + "/job", run + "/job/model")


def build(
    image_uri: str, ga_table: str, machine_type: str = "n1-standard-8", serving_machine_type: str = "n1-standard-2"
):
    """The pipeline function (decorated with ``kfp.dsl.pipeline``) for the container ``image_uri`` and the GA
    sessions table ``ga_table`` (``project.dataset.table``, ``table`` may be a wildcard like ``ga_sessions_*``).

    Raises:
        ValueError: ``ga_table`` is not ``project.dataset.table``.
    """
    from google_cloud_pipeline_components.types import artifact_types
    from google_cloud_pipeline_components.v1.bigquery import BigqueryQueryJobOp
    from google_cloud_pipeline_components.v1.custom_job import create_custom_training_job_from_component
    from google_cloud_pipeline_components.v1.endpoint import EndpointCreateOp, ModelDeployOp
    from google_cloud_pipeline_components.v1.model import ModelUploadOp
    from kfp import dsl

    parts = ga_table.split(".")
    if len(parts) != 3:
        raise ValueError(f"`ga_table` should be project.dataset.table. Received: ga_table={ga_table!r}")
    sql = query.render(*parts)
    if '"' in sql or "\\" in sql:  # BigqueryQueryJobOp splices the query into a JSON string as it is
        raise ValueError(f"the query {query.SQL_FILE} should hold no double quote or backslash")

    export_op = dsl.component(
        export_table, base_image="python:3.11-slim", packages_to_install=["google-cloud-bigquery>=3"]
    )

    @dsl.container_component
    def train(train_file: str, job_dir: str):
        return dsl.ContainerSpec(
            image=image_uri,
            command=["python", "-m", "trainer.task"],
            args=[*TRAINER_FLAGS, "--train-file", train_file, "--job-dir", job_dir],
        )

    train_op = create_custom_training_job_from_component(train, display_name="wals2-train", machine_type=machine_type)

    @dsl.container_component
    def gate(
        job_dir: str,
        served_metrics_uri: str,
        metric: str,
        threshold: str,
        tolerance: float,
        decision: dsl.OutputPath(str),
    ):
        return dsl.ContainerSpec(
            image=image_uri,
            command=["python", "-m", "pipeline.gate", "check"],
            args=[
                "--candidate",
                dsl.ConcatPlaceholder([job_dir, "/metrics.json"]),
                "--incumbent",
                served_metrics_uri,
                "--metric",
                metric,
                dsl.ConcatPlaceholder(["--threshold=", threshold]),
                "--tolerance",
                tolerance,
                "--decision-file",
                decision,
            ],
        )

    @dsl.container_component
    def record(job_dir: str, served_metrics_uri: str):
        return dsl.ContainerSpec(
            image=image_uri,
            command=["python", "-m", "pipeline.gate", "record"],
            args=["--candidate", dsl.ConcatPlaceholder([job_dir, "/metrics.json"]), "--incumbent", served_metrics_uri],
        )

    def retried(task):
        return task.set_retry(num_retries=RETRIES, backoff_duration=RETRY_DELAY, backoff_factor=1.0)

    @dsl.pipeline(name=PIPELINE_NAME, description="GA360 sessions -> WALS model -> gate -> Vertex AI endpoint")
    def retraining(
        project: str,
        bucket: str,
        served_metrics_uri: str,
        location: str = "us-central1",
        bq_location: str = "US",
        custom_dimension_index: int = query.DEFAULT_CUSTOM_DIMENSION,
        start_date: str = query.FIRST_DATE,
        end_date: str = query.LAST_DATE,
        events_dataset: str = "GA360_test",
        events_table: str = "recommendation_events",
        metric: str = "validation_rmse",
        threshold: str = "",
        tolerance: float = 0.0,
        model_display_name: str = "wals2",
        endpoint_resource_name: str = "",
    ):
        extract = retried(
            BigqueryQueryJobOp(
                project=project,
                location=bq_location,
                query=sql,
                query_parameters=[
                    {
                        "name": "custom_dimension_index",
                        "parameterType": {"type": "INT64"},
                        "parameterValue": {"value": custom_dimension_index},
                    },
                    {
                        "name": "start_date",
                        "parameterType": {"type": "STRING"},
                        "parameterValue": {"value": start_date},
                    },
                    {"name": "end_date", "parameterType": {"type": "STRING"}, "parameterValue": {"value": end_date}},
                ],
                job_configuration_query={
                    "destinationTable": {"projectId": project, "datasetId": events_dataset, "tableId": events_table},
                    "writeDisposition": "WRITE_TRUNCATE",
                },
            ).set_display_name("query")
        )
        paths = retried(
            export_op(
                project=project,
                location=bq_location,
                dataset=events_dataset,
                table=events_table,
                bucket=bucket,
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            )
            .set_display_name("export")
            .after(extract)
        )
        trained = retried(
            train_op(
                project=project,
                location=location,
                train_file=paths.outputs["train_file"],
                job_dir=paths.outputs["job_dir"],
            ).set_display_name("train")
        )
        verdict = retried(
            gate(
                job_dir=paths.outputs["job_dir"],
                served_metrics_uri=served_metrics_uri,
                metric=metric,
                threshold=threshold,
                tolerance=tolerance,
            )
            .set_display_name("gate")
            .after(trained)
        )
        with dsl.If(verdict.outputs["decision"] == "true", name="gate-passed"):
            model = dsl.importer(
                artifact_uri=paths.outputs["model_dir"],
                artifact_class=artifact_types.UnmanagedContainerModel,
                metadata={"containerSpec": {"imageUri": image_uri, **SERVING_CONTAINER}},
            ).set_display_name("saved-model")
            upload = retried(
                ModelUploadOp(
                    project=project,
                    location=location,
                    display_name=model_display_name,
                    unmanaged_container_model=model.outputs["artifact"],
                ).set_display_name("upload")
            )
            with dsl.If(endpoint_resource_name == "", name="new-endpoint"):
                created = retried(
                    EndpointCreateOp(project=project, location=location, display_name=model_display_name)
                ).set_display_name("create-endpoint")
            with dsl.Else(name="existing-endpoint"):
                existing = dsl.importer(
                    artifact_uri=endpoint_resource_name,
                    artifact_class=artifact_types.VertexEndpoint,
                    metadata={"resourceName": endpoint_resource_name},
                ).set_display_name("endpoint")
            deployed = retried(
                ModelDeployOp(
                    model=upload.outputs["model"],
                    endpoint=dsl.OneOf(created.outputs["endpoint"], existing.outputs["artifact"]),
                    deployed_model_display_name=model_display_name,
                    dedicated_resources_machine_type=serving_machine_type,
                    dedicated_resources_min_replica_count=1,
                    dedicated_resources_max_replica_count=1,
                    traffic_split={"0": 100},
                ).set_display_name("deploy")
            )
            retried(
                record(job_dir=paths.outputs["job_dir"], served_metrics_uri=served_metrics_uri)
                .set_display_name("record")
                .after(deployed)
            )

    return retraining


def compile_pipeline(path: str, **build_args) -> str:
    """Compiles the pipeline to its YAML spec at ``path`` (offline); returns ``path``."""
    from kfp import compiler

    compiler.Compiler().compile(build(**build_args), package_path=path)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.vertex", description="Compile the Vertex AI pipeline.")
    parser.add_argument(
        "--image",
        required=True,
        help="the project's container (Dockerfile), e.g. REGION-docker.pkg.dev/P/wals2/trainer:TAG",
    )
    parser.add_argument(
        "--ga-table", required=True, help="GA360 sessions table, project.dataset.table (wildcards allowed)"
    )
    parser.add_argument("--machine-type", default="n1-standard-8", help="training machine (default n1-standard-8)")
    parser.add_argument(
        "--serving-machine-type", default="n1-standard-2", help="endpoint machine (default n1-standard-2)"
    )
    parser.add_argument(
        "--output", default="wals2_pipeline.yaml", help="the compiled spec (default wals2_pipeline.yaml)"
    )
    args = parser.parse_args(argv)
    logs.configure()
    try:
        compile_pipeline(
            args.output,
            image_uri=args.image,
            ga_table=args.ga_table,
            machine_type=args.machine_type,
            serving_machine_type=args.serving_machine_type,
        )
    except ImportError as err:
        logger.error('%s: the Vertex AI pipeline needs pip install "wals2[pipeline]"', err)
        return 1
    except ValueError as err:
        logger.error("%s", err)
        return 1
    logger.info("wrote %s", args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
