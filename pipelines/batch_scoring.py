"""The batch-scoring pipeline with the azure-ai-ml SDK (same graph as batch_scoring.yml).

    python pipelines/batch_scoring.py --validate [--out job.yml] [--evaluate]   # offline: build, validate, write YAML
    python pipelines/batch_scoring.py --submit --images azureml:my-photos:1 --nodes 4 --processes-per-node 4
        [--trained-model azureml:designer-resnet-classifier:3] [--evaluate]
        [--subscription ID --resource-group RG --workspace NAME]            # else ./config.json

Convert -> Score Image Model (parallel) -> Merge Scored Parts; `--evaluate` adds
Evaluate Model after the merge, for labelled images (one sub-folder per class).
Flags and defaults are batch_scoring.yml's inputs; the parallel node's nodes,
processes per node and files per mini-batch come from --nodes,
--processes-per-node and --mini-batch-size.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from image_classification import add_action_flags, load_components, parse_checked, validate_or_submit

REPO = Path(__file__).resolve().parent.parent
# The pipeline's inputs, defaults and computes are defined once, in the YAML pipeline.
PIPELINE_YAML = REPO / "pipelines" / "batch_scoring.yml"
PARALLEL_SCORER = REPO / "components" / "parallel" / "score_image_model_parallel.yaml"
SCORE_JOB = "score"
NODE_COUNT = "node_count"


def _pipeline() -> dict:
    """The YAML pipeline: its inputs' names and values are this script's flags and defaults."""
    import yaml

    return yaml.safe_load(PIPELINE_YAML.read_text(encoding="utf-8"))


def _bindings(value, where: tuple = ()):
    """(path in the job, pipeline input) for every `${{parent.inputs.X}}` in a job."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _bindings(item, (*where, key))
    elif isinstance(value, str) and value.startswith("${{parent.inputs.") and value.endswith("}}"):
        yield where, value[len("${{parent.inputs."):-2].strip()


def _flag_types(pipeline: dict) -> dict:
    """How each literal input's flag parses: as the component parameter it feeds, or a count for a node setting."""
    import yaml
    from designer_resnet.arguments import int_in
    from designer_resnet.component_source import value_parser

    types = {}
    for job in pipeline["jobs"].values():
        spec = yaml.safe_load((PIPELINE_YAML.parent / job["component"]).read_text(encoding="utf-8"))
        for where, name in _bindings(job):
            if where[0] == "inputs" and len(where) == 2:
                entry = spec["inputs"][where[1]]
                if entry["type"] in ("integer", "number", "boolean", "string"):
                    types[name] = value_parser(entry, azure=True)
            else:  # mini_batch_size, resources.instance_count, max_concurrency_per_instance: positive counts
                types[name] = int_in(1)
    return types


def build_pipeline(args: argparse.Namespace):
    """The pipeline job, with the arguments' data, model, scale and compute choices."""
    from azure.ai.ml import Input, dsl, load_component

    components = load_components("v2")
    converter = components["convert_to_image_directory"]
    merger = components["merge_scored_parts"]
    evaluator = components["evaluate_model"]
    scorer = load_component(PARALLEL_SCORER)

    @dsl.pipeline(name="designer_resnet_batch_scoring", default_compute=args.cpu_compute,
                  description="ResNet batch scoring with the designer-resnet components")
    def batch_scoring(images, trained_model):
        convert = converter(input_path=images)
        score = scorer(trained_model=trained_model, dataset=convert.outputs.output_path, batch_size=args.batch_size)
        score.compute = args.gpu_compute
        score.mini_batch_size = str(args.mini_batch_size)
        score.resources = {"instance_count": args.node_count}
        score.max_concurrency_per_instance = args.processes_per_node
        merge = merger(scored_parts=score.outputs.scored_parts, dataset=convert.outputs.output_path)
        outputs = {"scored_dataset": merge.outputs.scored_dataset}
        if args.evaluate:
            evaluate = evaluator(scored_dataset=merge.outputs.scored_dataset)
            outputs["evaluation_results"] = evaluate.outputs.evaluation_results
        return outputs

    model_type = _pipeline()["inputs"]["trained_model"]["type"]
    return batch_scoring(images=Input(type="uri_folder", path=args.images),
                         trained_model=Input(type=model_type, path=args.trained_model))


def _compute(name: str) -> str:
    return name.removeprefix("azureml:")


def parse_args(argv=None) -> argparse.Namespace:
    from designer_resnet.arguments import ComponentArgumentParser

    p = ComponentArgumentParser(prog="batch_scoring.py", description=__doc__.splitlines()[0])
    add_action_flags(p, "batch_scoring")
    p.add_argument("--evaluate", action="store_true",
                   help="add Evaluate Model after the merge (labelled images: one sub-folder per class)")
    pipeline = _pipeline()
    types = _flag_types(pipeline)
    for name, value in pipeline["inputs"].items():
        flags = [f"--{name.replace('_', '-')}"] + (["--nodes"] if name == NODE_COUNT else [])
        if isinstance(value, dict):  # a data or model input: its default path
            p.add_argument(*flags, dest=name, default=value["path"], help=f"{value['type']} (default {value['path']})")
        else:
            p.add_argument(*flags, dest=name, type=types.get(name, str), default=value, help=f"default {value}")
    p.add_argument("--cpu-compute", default=_compute(pipeline["settings"]["default_compute"]),
                   help="cluster for convert, merge and evaluate")
    p.add_argument("--gpu-compute", default=_compute(pipeline["jobs"][SCORE_JOB]["compute"]),
                   help="cluster for the parallel scoring")
    p.add_argument("--experiment", default=pipeline.get("experiment_name", "designer-resnet"))
    return parse_checked(p, argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    return validate_or_submit(build_pipeline(args), args)


if __name__ == "__main__":
    sys.exit(main())
