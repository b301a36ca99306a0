"""The Vertex AI pipeline compiled to its YAML spec (offline): steps, order, parameters, retries and commands."""

import json
import sys
import types

import pytest

from pipeline import gate, query, vertex

REASON = 'the Vertex AI pipeline needs kfp and google-cloud-pipeline-components: pip install "wals2[pipeline]"'

IMAGE = "us-docker.pkg.dev/my-project/wals2/trainer:2026-12-01"
GA_TABLE = "my-project.GA360_test.ga_sessions_*"


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    _need_kfp()
    import yaml  # a kfp dependency

    path = vertex.compile_pipeline(str(tmp_path_factory.mktemp("spec") / "p.yaml"), image_uri=IMAGE, ga_table=GA_TABLE)
    with open(path) as handle:
        return yaml.safe_load(handle)


def _need_kfp():
    pytest.importorskip("kfp", reason=REASON)
    pytest.importorskip("google_cloud_pipeline_components", reason=REASON)


def _tasks(spec, dag=None, found=None):
    """Every task of the pipeline, nested conditions included: name -> (task, component, enclosing conditions)."""
    found = {} if found is None else found
    dag = spec["root"]["dag"] if dag is None else dag
    for name, task in dag["tasks"].items():
        component = spec["components"][task["componentRef"]["name"]]
        found[name] = task, component
        if "dag" in component:
            _tasks(spec, component["dag"], found)
    return found


def _container(spec, component):
    return spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]


def _constant(task, name):
    return task["inputs"]["parameters"][name]["runtimeValue"]["constant"]


def test_parameters(spec):
    params = spec["root"]["inputDefinitions"]["parameters"]
    required = {name for name, p in params.items() if "defaultValue" not in p}
    assert required == {"project", "bucket", "served_metrics_uri"}
    defaults = {name: p["defaultValue"] for name, p in params.items() if "defaultValue" in p}
    assert defaults["custom_dimension_index"] == 10  # TF1's article-id dimension
    assert (defaults["start_date"], defaults["end_date"]) == (query.FIRST_DATE, query.LAST_DATE)
    assert defaults["metric"] == "validation_rmse" and defaults["threshold"] == "" and defaults["tolerance"] == 0
    assert defaults["endpoint_resource_name"] == ""  # empty: a new endpoint
    assert spec["pipelineInfo"]["name"] == vertex.PIPELINE_NAME


def test_steps_order_and_retries(spec):
    tasks = _tasks(spec)
    names = {task["taskInfo"]["name"]: name for name, (task, _) in tasks.items()}
    steps = ["query", "export", "train", "gate", "upload", "create-endpoint", "deploy", "record"]
    assert set(steps) <= set(names)
    after = {step: set(tasks[names[step]][0].get("dependentTasks", [])) for step in steps}
    assert after["export"] == {names["query"]}
    assert after["train"] == {names["export"]}
    assert names["train"] in after["gate"]
    assert names["upload"] in after["deploy"] and after["record"] == {names["deploy"]}
    for step in steps:  # TF1's DAG: 5 retries, 5 minutes apart
        policy = tasks[names[step]][0]["retryPolicy"]
        assert policy["maxRetryCount"] == 5 and policy["backoffDuration"] == "300s"
        assert policy["backoffFactor"] == 1.0
    # upload, deploy and record run only when the gate said "true".
    gated = spec["root"]["dag"]["tasks"][next(n for n in spec["root"]["dag"]["tasks"] if n.startswith("condition"))]
    assert gated["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--gate-decision'] == 'true'"
    inside = spec["components"][gated["componentRef"]["name"]]["dag"]["tasks"]
    assert {names["upload"], names["deploy"], names["record"]} <= set(inside)


def test_query_step_runs_the_packaged_sql_with_parameters(spec):
    task = spec["root"]["dag"]["tasks"]["bigquery-query-job"]
    sql = _constant(task, "query")
    assert sql == query.render("my-project", "GA360_test", "ga_sessions_*")
    assert '"' not in sql and "\\" not in sql  # the component splices it into a JSON string unescaped
    parameters = {p["name"]: p for p in _constant(task, "query_parameters")}
    assert set(parameters) == {"custom_dimension_index", "start_date", "end_date"}
    assert parameters["custom_dimension_index"]["parameterType"]["type"] == "INT64"
    assert "pipelinechannel--custom_dimension_index" in parameters["custom_dimension_index"]["parameterValue"]["value"]
    destination = _constant(task, "job_configuration_query")
    assert destination["writeDisposition"] == "WRITE_TRUNCATE"
    assert "pipelinechannel--events_table" in destination["destinationTable"]["tableId"]


def test_train_step_is_a_custom_job_with_our_container(spec):
    tasks = _tasks(spec)
    task, component = tasks["train"]
    (pool,) = component["inputDefinitions"]["parameters"]["worker_pool_specs"]["defaultValue"]
    container = pool["container_spec"]
    assert container["image_uri"] == IMAGE
    assert container["command"] == ["python", "-m", "trainer.task"]
    args = container["args"]
    assert args[: len(vertex.TRAINER_FLAGS)] == vertex.TRAINER_FLAGS
    assert "--data-type" in args and "--use-optimized" in args
    assert args[args.index("--train-file") + 1] == "{{$.inputs.parameters['train_file']}}"
    assert task["inputs"]["parameters"]["train_file"]["taskOutputParameter"]["outputParameterKey"] == "train_file"
    assert pool["machine_spec"]["machine_type"] == "n1-standard-8"


#: Values for the placeholders of the gate's container arguments, as the backend would fill them in.
RUNTIME = {
    "{{$.inputs.parameters['job_dir']}}": "gs://bucket/runs/1/job",
    "{{$.inputs.parameters['served_metrics_uri']}}": "gs://bucket/served/metrics.json",
    "{{$.inputs.parameters['metric']}}": "validation_rmse",
    "{{$.inputs.parameters['threshold']}}": "",
    "{{$.inputs.parameters['tolerance']}}": "0.05",
    "{{$.outputs.parameters['decision'].output_file}}": "/tmp/outputs/decision",
}


def _fill(argument):
    if argument.startswith('{"Concat"'):
        return "".join(_fill(part) for part in json.loads(argument)["Concat"])
    return RUNTIME.get(argument, argument)


def test_gate_and_record_call_the_shared_gate_command_line(spec):
    tasks = _tasks(spec)
    for step, sub in (("gate", "check"), ("record", "record")):
        container = _container(spec, tasks[step][1])
        assert container["image"] == IMAGE
        assert container["command"] == ["python", "-m", "pipeline.gate", sub]
        # The spec's arguments, filled in, parse with the gate's own parser: one gate implementation.
        parsed = gate.build_parser().parse_args([sub] + [_fill(a) for a in container["args"]])
        assert parsed.candidate == "gs://bucket/runs/1/job/metrics.json"
        assert parsed.incumbent == "gs://bucket/served/metrics.json"
        if sub == "check":
            assert (parsed.metric, parsed.threshold, parsed.tolerance) == ("validation_rmse", None, 0.05)
            assert parsed.decision_file == "/tmp/outputs/decision"


def test_upload_and_deploy(spec):
    tasks = _tasks(spec)
    importer = next(c for n, (t, c) in tasks.items() if t["taskInfo"]["name"] == "saved-model")
    metadata = spec["deploymentSpec"]["executors"][importer["executorLabel"]]["importer"]["metadata"]
    assert metadata["containerSpec"]["imageUri"] == IMAGE
    assert metadata["containerSpec"]["command"] == ["python", "-m", "trainer.serve"]
    assert metadata["containerSpec"]["healthRoute"] == "/health"
    deploy = tasks["model-deploy"][0]
    assert _constant(deploy, "traffic_split") == {"0": 100}  # all traffic to the new model, as TF1's DAG did
    assert deploy["inputs"]["artifacts"]["model"]["taskOutputArtifact"]["producerTask"] == "model-upload"


def test_bad_table_is_refused():
    _need_kfp()
    with pytest.raises(ValueError, match="project.dataset.table"):
        vertex.build(IMAGE, "GA360_test.ga_sessions")


def test_export_step_extracts_one_csv_with_a_header(monkeypatch):
    calls = []

    class Job:
        def result(self):
            calls.append("waited")

    class Client:
        def __init__(self, project):
            calls.append(("client", project))

        def extract_table(self, source, destination, location, job_config):
            calls.append((source, destination, location, job_config))
            return Job()

    bigquery = types.SimpleNamespace(Client=Client, ExtractJobConfig=lambda **kw: kw)
    cloud = types.ModuleType("google.cloud")
    cloud.bigquery = bigquery
    monkeypatch.setitem(sys.modules, "google.cloud", cloud)
    monkeypatch.setitem(sys.modules, "google.cloud.bigquery", bigquery)
    paths = vertex.export_table("p", "US", "GA360_test", "recommendation_events", "gs://b/wals2/", "job-7")
    assert paths == (
        "gs://b/wals2/runs/job-7/web_views.csv",
        "gs://b/wals2/runs/job-7/job",
        "gs://b/wals2/runs/job-7/job/model",
    )
    assert paths.train_file.endswith("web_views.csv")
    assert calls == [
        ("client", "p"),
        (
            "p.GA360_test.recommendation_events",
            "gs://b/wals2/runs/job-7/web_views.csv",
            "US",
            {"destination_format": "CSV", "print_header": True},
        ),
        "waited",
    ]
