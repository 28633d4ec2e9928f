"""The image-classification sweep with the azure-ai-ml SDK (same graph as image_classification_sweep.yml).

    python pipelines/image_classification_sweep.py --validate [--out job.yml]     # offline: build, validate, write YAML
    python pipelines/image_classification_sweep.py --submit --train-images azureml:my-images:1 \
        --test-images azureml:my-test:1 --nodes 2 --processes-per-node 4
        [--subscription ID --resource-group RG --workspace NAME]                  # else ./config.json

The search space, objective, sampling, early termination and limits are the YAML pipeline's. Unlike
the YAML, this script gives every trial --processes-per-node processes on each of its --nodes nodes:
`.sweep()` keeps neither the command node's distribution nor its resources, so both are set on the
sweep node's own copy of the trial component (and the node count on the sweep node too); see docs/sweeps.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from image_classification import (_flag_types, add_action_flags, add_register_flags, load_components, parse_checked,
                                  validate_or_submit)

REPO = Path(__file__).resolve().parent.parent
# The pipeline's inputs, defaults and sweep settings are defined once, in the YAML pipeline.
PIPELINE_YAML = REPO / "pipelines" / "image_classification_sweep.yml"
SWEEP_JOB = "train"
NODE_COUNT = "node_count"


def _pipeline() -> dict:
    import yaml

    return yaml.safe_load(PIPELINE_YAML.read_text(encoding="utf-8"))


def _sweep(pipeline: dict) -> dict:
    return pipeline["jobs"][SWEEP_JOB]


def search_space(sweep: dict) -> dict:
    """The YAML's search space as azure-ai-ml's distributions (Choice, LogUniform, ...), by trial input."""
    from azure.ai.ml import sweep as distributions

    classes = {"choice": distributions.Choice, "randint": distributions.Randint, "uniform": distributions.Uniform,
               "loguniform": distributions.LogUniform, "normal": distributions.Normal,
               "lognormal": distributions.LogNormal, "quniform": distributions.QUniform,
               "qloguniform": distributions.QLogUniform, "qnormal": distributions.QNormal,
               "qlognormal": distributions.QLogNormal}
    return {name: classes[spec["type"]](**{k: v for k, v in spec.items() if k != "type"})
            for name, spec in sweep["search_space"].items()}


def sampling_algorithm(sweep: dict):
    from azure.ai.ml import sweep as sampling

    spec = sweep["sampling_algorithm"]
    spec = {"type": spec} if isinstance(spec, str) else dict(spec)
    classes = {"random": sampling.RandomSamplingAlgorithm, "grid": sampling.GridSamplingAlgorithm,
               "bayesian": sampling.BayesianSamplingAlgorithm}
    return classes[spec.pop("type")](**spec)


def early_termination(sweep: dict):
    from azure.ai.ml import sweep as policies

    spec = dict(sweep["early_termination"])
    classes = {"bandit": policies.BanditPolicy, "median_stopping": policies.MedianStoppingPolicy,
               "truncation_selection": policies.TruncationSelectionPolicy}
    return classes[spec.pop("type")](**spec)


def keep_processes_per_node(swept, processes_per_node: int, node_count: int, shm_size: str) -> None:
    """Give every trial of a sweep node `processes_per_node` processes on each of `node_count` nodes.

    A sweep node has no `distribution`: a trial runs under its trial component's. `.sweep()` made the
    node's own deep copy of the component, so changing it changes this node's trials only (submitted as
    an anonymous component of its own). The node count goes on the sweep node's `resources`, a sweep
    setting, and on the trial too, so that the trial's spec says what its trials run with.
    """
    from azure.ai.ml import PyTorchDistribution
    from azure.ai.ml.entities import JobResourceConfiguration

    swept.trial.distribution = PyTorchDistribution(process_count_per_instance=processes_per_node)
    swept.trial.resources = JobResourceConfiguration(instance_count=node_count)
    swept.resources = JobResourceConfiguration(instance_count=node_count, shm_size=shm_size)


def build_pipeline(args: argparse.Namespace):
    """The pipeline job, with the arguments' data, model, compute and trial choices."""
    from azure.ai.ml import Input, dsl

    sweep = _sweep(_pipeline())
    c = load_components("v2")

    # Variables are named as the YAML pipeline's jobs: they name the nodes.
    @dsl.pipeline(name="designer_resnet_image_classification_sweep", default_compute=args.cpu_compute,
                  description="ResNet image classification with a sweep over Train PyTorch Model")
    def image_classification_sweep(train_images, test_images):
        convert_train = c["convert_to_image_directory"](input_path=train_images)
        convert_test = c["convert_to_image_directory"](input_path=test_images)
        init_transformation = c["init_image_transformation"](size=args.resize_size, crop_size=args.crop_size,
                                                             random_horizontal_flip=args.horizontal_flip)
        transform_train = c["apply_image_transformation"](
            input_transformation_path=init_transformation.outputs.output_path,
            input_image_path=convert_train.outputs.output_path, mode="For training")
        transform_test = c["apply_image_transformation"](
            input_transformation_path=init_transformation.outputs.output_path,
            input_image_path=convert_test.outputs.output_path, mode="For inference")
        split = c["split_image_directory"](input_path=transform_train.outputs.output_path, fraction=args.train_fraction)
        resnet = c["resnet"](model_name=args.model_name, pretrained=args.pretrained)
        trial = c["train_pytorch_model"](untrained_model=resnet.outputs.output_path,
                                         training_data=split.outputs.output_path1,
                                         validation_data=split.outputs.output_path2, epochs=args.epochs,
                                         **search_space(sweep))
        limits = sweep["limits"]
        train = trial.sweep(primary_metric=sweep["objective"]["primary_metric"], goal=sweep["objective"]["goal"],
                            sampling_algorithm=sampling_algorithm(sweep), compute=args.gpu_compute,
                            max_total_trials=args.max_total_trials, max_concurrent_trials=args.max_concurrent_trials,
                            timeout=limits.get("timeout"), trial_timeout=limits.get("trial_timeout"),
                            early_termination_policy=early_termination(sweep))
        keep_processes_per_node(train, args.processes_per_node, args.node_count, sweep["resources"]["shm_size"])
        for port in ("training_data", "validation_data"):  # as the YAML sweep's: copied to each trial's node
            train.inputs[port].mode = sweep["inputs"][port]["mode"]
        score = c["score_image_model"](trained_model=train.outputs.trained_model,
                                       dataset=transform_test.outputs.output_path)
        score.resources = dict(_pipeline()["jobs"]["score"]["resources"])
        evaluate = c["evaluate_model"](scored_dataset=score.outputs.scored_dataset)
        return {"trained_model": train.outputs.trained_model,
                "evaluation_results": evaluate.outputs.evaluation_results}

    job = image_classification_sweep(train_images=Input(type="uri_folder", path=args.train_images),
                                     test_images=Input(type="uri_folder", path=args.test_images))
    if args.model_asset:  # the best trial's model, registered by the run as the next version of this name
        job.outputs.trained_model.name = args.model_asset
    return job


def parse_args(argv=None) -> argparse.Namespace:
    from designer_resnet.arguments import ComponentArgumentParser, int_in

    p = ComponentArgumentParser(prog="image_classification_sweep.py", description=__doc__.splitlines()[0])
    add_action_flags(p, "image_classification_sweep")
    pipeline = _pipeline()
    # Flags parse as the component parameters the inputs feed; the sweep job's component is its trial.
    jobs = {name: {**job, "component": job.get("component") or job["trial"]} for name, job in pipeline["jobs"].items()}
    types = _flag_types({"jobs": jobs})
    for name, value in pipeline["inputs"].items():
        flags = [f"--{name.replace('_', '-')}"] + (["--nodes"] if name == NODE_COUNT else [])
        if isinstance(value, dict):  # a data input: its default path
            p.add_argument(*flags, dest=name, default=value["path"], help=f"data (default {value['path']})")
        else:
            p.add_argument(*flags, dest=name, type=types.get(name, int_in(1) if name == NODE_COUNT else str),
                           default=value, help=f"default {value}")
    p.add_argument("--processes-per-node", type=int_in(1), default=1,
                   help="processes (GPUs) per node of every trial (default 1)")
    limits = _sweep(pipeline)["limits"]
    p.add_argument("--max-total-trials", type=int_in(1), default=limits["max_total_trials"],
                   help=f"default {limits['max_total_trials']}")
    p.add_argument("--max-concurrent-trials", type=int_in(1), default=limits["max_concurrent_trials"],
                   help=f"default {limits['max_concurrent_trials']}")
    p.add_argument("--cpu-compute", default="cpu-cluster")
    p.add_argument("--gpu-compute", default="gpu-cluster")
    p.add_argument("--experiment", default=pipeline["experiment_name"])
    add_register_flags(p, pipeline["outputs"]["trained_model"].get("name"))
    return parse_checked(p, argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return validate_or_submit(build_pipeline(args), args)


if __name__ == "__main__":
    sys.exit(main())
