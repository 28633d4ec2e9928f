"""The image-classification pipeline with the azure-ai-ml SDK (same graph as image_classification.yml).

    python pipelines/image_classification.py --validate [--out job.yml]     # offline: build, validate, write YAML
    python pipelines/image_classification.py --submit --train-images azureml:my-images:1 --test-images azureml:my-test:1
        [--subscription ID --resource-group RG --workspace NAME]           # else ./config.json

The v2 command components (components/*.yaml) by default; `--flavour typed` builds the
same pipeline from the designer-typed ones (components/typed/), which azure-ai-ml loads
only with AZURE_ML_INTERNAL_COMPONENTS_ENABLED=true (this script sets it for that flavour).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMPONENTS = REPO / "components"
# The pipeline's inputs and their defaults are defined once, in the YAML pipeline.
PIPELINE_YAML = REPO / "pipelines" / "image_classification.yml"
NODE_COUNT = "node_count"
COUNTS = (NODE_COUNT, "processes_per_node")  # inputs that feed run settings: whole numbers >= 1
FLAVOUR_DIRS = {"v2": COMPONENTS, "typed": COMPONENTS / "typed"}


def load_components(flavour: str) -> dict:
    """Every component of one flavour, by its v2 name."""
    if flavour == "typed":
        os.environ["AZURE_ML_INTERNAL_COMPONENTS_ENABLED"] = "true"
        import azure.ai.ml._internal  # noqa: F401  (registers the designer node types for pipelines)
    from azure.ai.ml import load_component

    return {spec.stem: load_component(spec) for spec in sorted(FLAVOUR_DIRS[flavour].glob("*.yaml"))}


def build_pipeline(args: argparse.Namespace):
    """The pipeline job, with the arguments' data, model and compute choices."""
    from azure.ai.ml import Input, dsl

    components = load_components(args.flavour)
    convert = components["convert_to_image_directory"]
    init_transform = components["init_image_transformation"]
    apply_transform = components["apply_image_transformation"]
    split = components["split_image_directory"]
    resnet = components["resnet"]
    trainer = components["train_pytorch_model"]
    scorer = components["score_image_model"]
    evaluator = components["evaluate_model"]

    @dsl.pipeline(name="designer_resnet_image_classification", default_compute=args.cpu_compute,
                  description="ResNet image classification with the designer-resnet components")
    def image_classification(train_images, test_images):
        train_dir = convert(input_path=train_images)
        test_dir = convert(input_path=test_images)
        transform = init_transform(size=args.resize_size, crop_size=args.crop_size,
                                   random_horizontal_flip=args.horizontal_flip)
        train_tf = apply_transform(input_transformation_path=transform.outputs.output_path,
                                   input_image_path=train_dir.outputs.output_path, mode="For training")
        test_tf = apply_transform(input_transformation_path=transform.outputs.output_path,
                                  input_image_path=test_dir.outputs.output_path, mode="For inference")
        parts = split(input_path=train_tf.outputs.output_path, fraction=args.train_fraction)
        untrained = resnet(model_name=args.model_name, pretrained=args.pretrained)
        trained = trainer(untrained_model=untrained.outputs.output_path, training_data=parts.outputs.output_path1,
                          validation_data=parts.outputs.output_path2, epochs=args.epochs,
                          batch_size=args.batch_size, learning_rate=args.learning_rate)
        train_job = _pipeline()["jobs"]["train"]
        trained.compute = args.gpu_compute
        trained.resources = {"instance_count": args.node_count, "shm_size": train_job["resources"]["shm_size"]}
        # The DSL takes no pipeline input here ("Not a valid integer"): the YAML binds it, the script passes a value.
        trained.distribution = {"type": "pytorch", "process_count_per_instance": args.processes_per_node}
        trained.environment_variables = dict(train_job["environment_variables"])
        for port in ("training_data", "validation_data"):
            trained.inputs[port].mode = args.training_data_mode
        scored = scorer(trained_model=trained.outputs.trained_model, dataset=test_tf.outputs.output_path)
        scored.resources = dict(_pipeline()["jobs"]["score"]["resources"])
        evaluated = evaluator(scored_dataset=scored.outputs.scored_dataset)
        return {"trained_model": trained.outputs.trained_model,
                "evaluation_results": evaluated.outputs.evaluation_results}

    job = image_classification(train_images=Input(type="uri_folder", path=args.train_images),
                               test_images=Input(type="uri_folder", path=args.test_images))
    if args.model_asset:  # registered by the run as the next version of this name
        job.outputs.trained_model.name = args.model_asset
    return job


def _model_asset() -> str | None:
    """The model name the YAML pipeline registers its trained model under."""
    return _pipeline()["outputs"]["trained_model"].get("name")

def _pipeline() -> dict:
    """The YAML pipeline: its inputs' names and values are this script's flags and defaults."""
    import yaml

    return yaml.safe_load(PIPELINE_YAML.read_text(encoding="utf-8"))


def _flag_types(pipeline: dict) -> dict:
    """How each pipeline input's flag parses: as the component parameter it feeds (type, range, enum)."""
    from designer_resnet.component_source import parameters, value_parser

    types = {}
    for job in pipeline["jobs"].values():
        component = Path(str(job["component"])).stem
        for key, value in (job.get("inputs") or {}).items():
            if isinstance(value, str) and value.startswith("${{parent.inputs.") and key in parameters(component):
                types[value[len("${{parent.inputs."):-2].strip()] = value_parser(parameters(component)[key],
                                                                                  azure=True)
    return types


def parse_args(argv=None) -> argparse.Namespace:
    from designer_resnet.arguments import ComponentArgumentParser, int_in

    p = ComponentArgumentParser(prog="image_classification.py", description=__doc__.splitlines()[0])
    add_action_flags(p, "image_classification")
    p.add_argument("--flavour", choices=sorted(FLAVOUR_DIRS), default="v2",
                   help="v2 command components (default) or the designer-typed ones")
    pipeline = _pipeline()
    types = _flag_types(pipeline)
    for name, value in pipeline["inputs"].items():
        flags = [f"--{name.replace('_', '-')}"] + (["--nodes"] if name == NODE_COUNT else [])
        counts = int_in(1) if name in COUNTS else str
        if isinstance(value, dict):  # a data input: its default path
            p.add_argument(*flags, dest=name, default=value["path"], help=f"data (default {value['path']})")
        else:
            p.add_argument(*flags, dest=name, type=types.get(name, counts),
                           default=value, help=f"default {value}")
    p.add_argument("--cpu-compute", default="cpu-cluster")
    p.add_argument("--gpu-compute", default="gpu-cluster")
    add_register_flags(p, _model_asset())
    p.add_argument("--training-data-mode", choices=("download", "ro_mount"),
                   default=_pipeline()["jobs"]["train"]["inputs"]["training_data"]["mode"],
                   help="how Train reads its sets: copied to the node's disk first (download, the default) or "
                        "mounted, with the mount's block cache (ro_mount: sets larger than the node's disk)")
    p.add_argument("--experiment", default="designer-resnet")
    return parse_checked(p, argv)


def add_action_flags(p: argparse.ArgumentParser, name: str) -> None:
    """--validate or --submit, --out, and the workspace flags: what every pipeline script takes."""
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--validate", action="store_true", help="build and validate offline; write the job YAML")
    action.add_argument("--submit", action="store_true", help="submit to the workspace and print the studio URL")
    p.add_argument("--out", type=Path, default=Path(f"{name}.resolved.yml"), help="where --validate writes the job YAML")
    p.add_argument("--subscription")
    p.add_argument("--resource-group")
    p.add_argument("--workspace")


def add_register_flags(p: argparse.ArgumentParser, asset: str | None) -> None:
    """--model-asset NAME (default the YAML output's `name`) or --no-register: whether the run registers its model."""
    register = p.add_mutually_exclusive_group()
    register.add_argument("--model-asset", default=asset,
                          help=f"register the trained model as the next version of this name (default {asset})")
    register.add_argument("--no-register", dest="model_asset", action="store_const", const=None,
                          help="do not register the trained model (it stays an output of the run)")


def parse_checked(p: argparse.ArgumentParser, argv) -> argparse.Namespace:
    args = p.parse_args(argv)
    if args.validate and not args.out.parent.is_dir():
        p.error(f"--out: the folder {args.out.parent} does not exist")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    return validate_or_submit(build_pipeline(args), args)


def validate_or_submit(job, args: argparse.Namespace) -> int:
    """Validate the pipeline job offline; then write its YAML (--validate) or submit it (--submit)."""
    result = job._validate()
    if not result.passed:
        print(f"error: the pipeline does not validate: {result.error_messages}", file=sys.stderr)
        return 1
    if args.validate:
        import yaml

        args.out.write_text(yaml.safe_dump(job._to_dict(), sort_keys=False), encoding="utf-8")
        print(f"pipeline valid: {len(job.jobs)} jobs; job YAML written to {args.out}")
        return 0
    from designer_resnet.errors import UserError
    from designer_resnet.workspace import ml_client

    try:
        client = ml_client(args.subscription, args.resource_group, args.workspace)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    submitted = client.jobs.create_or_update(job, experiment_name=args.experiment)
    print(f"submitted {submitted.name}: {submitted.studio_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
