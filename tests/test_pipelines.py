"""Pipeline definitions: they load in azure-ai-ml, and every connection joins ports of one type."""

from __future__ import annotations

import pytest
import yaml
from azure.ai.ml import load_job

from designer_resnet.errors import UserError
from designer_resnet.runner.graph import check_port_types, load_pipeline, topological_order

from conftest import REPO

PIPELINE = REPO / "pipelines" / "image_classification.yml"


def test_pipeline_yaml_loads_and_validates_offline():
    import azure.ai.ml._internal  # noqa: F401  (internal node types in pipelines)

    job = load_job(PIPELINE)
    result = job._validate()
    assert result.passed, result.error_messages
    assert list(job.jobs) == ["convert_train", "convert_test", "init_transformation", "transform_train",
                              "transform_test", "split", "resnet", "train", "score", "evaluate"]
    train = job.jobs["train"]
    assert train.type == "DistributedComponent" and train.distribution["type"] == "pytorch"
    assert train.compute == "azureml:gpu-cluster" and job.settings.default_compute == "cpu-cluster"
    assert set(job.inputs) >= {"train_images", "test_images", "model_name", "pretrained", "epochs", "batch_size",
                               "node_count"}


def test_every_connection_joins_ports_of_the_same_type():
    pipeline = load_pipeline(PIPELINE)
    check_port_types(pipeline)
    links = [(n.name, port, src, out) for n in pipeline.nodes.values() for port, src, out in n.upstream()]
    assert ("train", "untrained_model", "resnet", "output_path") in links
    assert len(links) == 11
    for node, port, src, out in links:
        wanted = pipeline.nodes[node].port_type("inputs", port)
        assert wanted == pipeline.nodes[src].port_type("outputs", out) or wanted == "AnyDirectory"
    order = topological_order(pipeline)
    assert order.index("resnet") < order.index("train") < order.index("score") < order.index("evaluate")


def test_mistyped_connection_is_refused_naming_both_ends(tmp_path):
    doc = yaml.safe_load(PIPELINE.read_text())
    doc["jobs"]["train"]["inputs"]["untrained_model"] = "${{parent.jobs.split.outputs.output_path1}}"
    for job in doc["jobs"].values():
        job["component"] = job["component"].replace("file:../", f"file:{REPO}/")
    bad = tmp_path / "bad.yml"
    bad.write_text(yaml.safe_dump(doc))
    with pytest.raises(UserError, match=r"split\.output_path1 \(ImageDirectory\) cannot connect to "
                                        r"train\.untrained_model \(UntrainedModelDirectory\)"):
        check_port_types(load_pipeline(bad))
