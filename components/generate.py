"""Write both flavours of every component spec, and the designer-typed pipeline, from their one source.

    python components/generate.py           # (re)write every generated file
    python components/generate.py --check   # list stale generated files; exit 1 if any

Sources (edit these):
  src/designer_resnet/components/<name>.yaml   ports, parameters, descriptions, command, beside the entry
                                          module <name>.py, whose command line it builds (and which every
                                          code snapshot therefore carries)
  environments/designer-resnet.yaml       the base image (and the environment asset)
  environments/conda.yaml                 the pinned dependencies (written by environments/lock.py)
  pipelines/image_classification.yml      the v2 pipeline
  pipelines/batch_scoring.yml             the batch-scoring pipeline (and its pipeline component)
  src/designer_resnet/__init__.py         __version__: every component's version (and the package's)

Generated (never edit):
  components/<name>.yaml                  v2 command component (uri_folder / mlflow_model ports)
  components/typed/<name>.yaml            designer-typed component, named <name>_typed
  components/parallel/<name>.yaml         v2 parallel component, for a source with a `parallel:` flavour
  components/pipeline/batch_scoring.yaml  pipeline component of pipelines/batch_scoring.yml (batch endpoints)
  components/pipeline/image_classification.yaml, train_and_score.yaml
                                          pipeline components of pipelines/image_classification.yml (all of
                                          it; its ResNet, Train, Score, Evaluate jobs): one designer block each
  pipelines/image_classification_typed.yml

Environments are written inline into every spec, so a spec packaged by
`mldesigner compile` (which moves it next to its code) is complete on its own.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import NamedTuple

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from designer_resnet import __version__  # noqa: E402
from designer_resnet.arguments import ComponentArgumentParser  # noqa: E402
from designer_resnet.component_source import PARALLEL, flavour  # noqa: E402
from designer_resnet.specs import (  # noqa: E402
    DESIGNER_PORT_TYPES, TYPED_SUFFIX, V2_FOLDER, V2_PARAM_TYPE, V2_PORT_TYPE, designer_note, typed_to_v2)

SOURCES = REPO / "src" / "designer_resnet" / "components"
V2_DIR = REPO / "components"
TYPED_DIR = REPO / "components" / "typed"
PARALLEL_DIR = REPO / "components" / "parallel"
PIPELINE_DIR = REPO / "components" / "pipeline"
GENERATED_DIRS = (V2_DIR, TYPED_DIR, PARALLEL_DIR, PIPELINE_DIR)
ENVIRONMENTS = REPO / "environments"
PIPELINE = REPO / "pipelines" / "image_classification.yml"
TYPED_PIPELINE = REPO / "pipelines" / "image_classification_typed.yml"
BATCH_PIPELINE = REPO / "pipelines" / "batch_scoring.yml"
BATCH_COMPONENT = PIPELINE_DIR / "batch_scoring.yaml"
BATCH_COMPONENT_NAME = "designer_resnet_batch_scoring"

V2_SCHEMA = "https://azuremlschemas.azureedge.net/latest/commandComponent.schema.json"
PARALLEL_SCHEMA = "https://azuremlschemas.azureedge.net/latest/parallelComponent.schema.json"
PIPELINE_COMPONENT_SCHEMA = "https://azuremlschemas.azureedge.net/latest/pipelineComponent.schema.json"
TYPED_SCHEMA = "https://componentsdk.azureedge.net/jsonschema/{}.json"
PACKAGE_TAG = "designer-resnet"
# What every source must hold, and of which kind (`distributed` and `local_options` are optional).
SOURCE_KEYS = {"name": str, "display_name": str, "category": str, "description": str,
               "inputs": dict, "outputs": dict, "command": str}
_KIND = {str: "text", dict: "mapping"}
# Azure ML's parallel job driver runs inside the parallel component's environment: it imports azureml-core
# (azureml._base_sdk_common), and azureml-examples' parallel environments add azureml-dataset-runtime[fuse] for
# its inputs. Only the parallel flavour's environment gets them; this package and its tests never import them.
PARALLEL_DRIVER = ("azureml-core==1.61.0.post4", "azureml-dataset-runtime[fuse]==1.62.0.post1")
# Lock pins the driver cannot be installed beside, and the versions pip's resolver chose for the lock plus
# PARALLEL_DRIVER: azureml-core wants packaging<26 and pyopenssl<=26.0 (so cryptography<47);
# azureml-dataset-runtime wants numpy<2.3.3 and pyarrow<24; its azureml-dataprep wants cloudpickle<3
# (so joblib<1.6) and azure-identity<=1.17.0. The tests run with the lock's versions, not these.
PARALLEL_DRIVER_OVERRIDES = {"packaging": "25.0", "cryptography": "46.0.7", "numpy": "2.3.2", "pyarrow": "23.0.1",
                             "cloudpickle": "2.2.1", "joblib": "1.5.3", "azure-identity": "1.17.0"}


class SourceError(Exception):
    """A file the generator cannot use; main prints it as one `error:` line, naming the file and the fix."""


def _rel(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def _kind(value) -> str:
    names = {dict: "a mapping", list: "a list", str: "text", type(None): "nothing"}
    return names.get(type(value), f"a {type(value).__name__}")


def read_yaml(path: Path, what: str):
    """The YAML document in `path`; SourceError when it cannot be read or parsed, or is not a mapping."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{_rel(path)}: cannot be read ({getattr(exc, 'strerror', None) or exc}); "
                          f"it should be {what}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise SourceError(f"{_rel(path)}: not valid YAML{where} ({problem}); fix the file, which should be "
                          f"{what}") from None
    if not isinstance(doc, dict):
        raise SourceError(f"{_rel(path)}: must be a mapping ({what}), got {_kind(doc)}")
    return doc


def load_source(path: Path) -> dict:
    """A component source, checked for everything the generator reads from it."""
    source = read_yaml(path, f"a component source with {', '.join(SOURCE_KEYS)}")
    missing = [key for key in SOURCE_KEYS if key not in source]
    if missing:
        raise SourceError(f"{_rel(path)}: lacks {', '.join(missing)}; every component source needs "
                          f"{', '.join(SOURCE_KEYS)} (see the other sources beside it)")
    for key, kind in SOURCE_KEYS.items():
        if not isinstance(source[key], kind) or (kind is str and not source[key].strip()):
            raise SourceError(f"{_rel(path)}: `{key}` must be a non-empty {_KIND[kind]}, got {_kind(source[key])}")
    if source["name"] != path.stem:
        raise SourceError(f"{_rel(path)}: `name` is {source['name']!r}; it must be the file's name, {path.stem!r}")
    for direction in ("inputs", "outputs"):
        for port, entry in source[direction].items():
            lacks = [k for k in ("type", "description") if not isinstance(entry, dict) or k not in entry]
            if lacks:
                raise SourceError(f"{_rel(path)}: {direction}.{port} lacks {' and '.join(lacks)}; give each "
                                  f"{direction[:-1]} a mapping with type and description")
    return source


def _header(source: Path) -> str:
    return (f"# Generated by components/generate.py from src/designer_resnet/components/{source.name}: edit that file and run\n"
            f"# `python components/generate.py`, not this one.\n")


def _dump(doc: dict) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=100, allow_unicode=True)


def _folded(key: str, lines: list[str]) -> str:
    """A `key: >-` block, one entry a line (the loaded value joins them with spaces)."""
    return f"{key}: >-\n" + "".join(f"  {line}\n" for line in lines)


def _designer_port(kind) -> bool:
    """A designer port type, or a list of them (an input that takes several)."""
    kinds = kind if isinstance(kind, list) else [kind]
    return bool(kinds) and all(isinstance(k, str) and k in DESIGNER_PORT_TYPES for k in kinds)


def _v2_port(kind) -> str:
    """The v2 type of a designer port type; a folder (uri_folder) for an input taking types of different v2 types."""
    v2 = {V2_PORT_TYPE.get(k, V2_FOLDER) for k in (kind if isinstance(kind, list) else [kind])}
    return v2.pop() if len(v2) == 1 else V2_FOLDER


def _port_description(spec: dict) -> str:
    text = " ".join(str(spec["description"]).split())
    return f"{text} {designer_note(spec['type'])}" if _designer_port(spec["type"]) else text


def _inputs(source: dict, v2: bool) -> dict:
    inputs = {}
    for name, spec in source["inputs"].items():
        kind = spec["type"]
        entry: dict = {}
        if _designer_port(kind):
            entry["type"] = _v2_port(kind) if v2 else kind
        elif isinstance(kind, str) and kind in V2_PARAM_TYPE:
            entry["type"] = V2_PARAM_TYPE[kind] if v2 else kind
        else:
            raise SourceError(f"src/designer_resnet/components/{source['name']}.yaml: input {name}: "
                              f"unknown type {kind!r}")
        for key in ("enum", "default", "min", "max", "optional"):
            if key in spec:
                entry[key] = spec[key]
        entry["description"] = _port_description(spec)
        inputs[name] = entry
    return inputs


def _outputs(source: dict, v2: bool) -> dict:
    outputs = {}
    for name, spec in source["outputs"].items():
        kind = spec["type"]
        if kind not in DESIGNER_PORT_TYPES:
            raise SourceError(f"src/designer_resnet/components/{source['name']}.yaml: output {name}: "
                              f"unknown type {kind!r}")
        outputs[name] = {"type": V2_PORT_TYPE.get(kind, V2_FOLDER) if v2 else kind,
                         "description": _port_description(spec)}
    return outputs


def _environment(v2: bool, parallel: bool = False) -> dict:
    environment = ENVIRONMENTS / "designer-resnet.yaml"
    image = read_yaml(environment, "the environment asset, with `image`").get("image")
    if not isinstance(image, str) or not image:
        raise SourceError(f"{_rel(environment)}: lacks `image`, the base image every spec names")
    conda = read_yaml(ENVIRONMENTS / "conda.yaml", "the pinned dependencies written by environments/lock.py")
    if parallel:
        conda = _with_parallel_driver(conda)
    if v2:
        return {"image": image, "conda_file": conda}
    return {"docker": {"image": image}, "conda": {"conda_dependencies": conda}, "os": "Linux"}


def _with_parallel_driver(conda: dict) -> dict:
    """The lock's conda file with PARALLEL_DRIVER added and PARALLEL_DRIVER_OVERRIDES in place of those pins."""
    where = _rel(ENVIRONMENTS / "conda.yaml")
    pip = next((d for d in conda.get("dependencies") or [] if isinstance(d, dict) and "pip" in d), None)
    if pip is None or not isinstance(pip["pip"], list):
        raise SourceError(f"{where}: lacks the `pip:` list of pins; rewrite it with environments/lock.py")
    pins = {}
    for pin in pip["pip"]:
        name, _, version = str(pin).partition("==")
        pins[name] = f"{name}=={PARALLEL_DRIVER_OVERRIDES.get(name, version)}"
    unknown = sorted(set(PARALLEL_DRIVER_OVERRIDES) - set(pins))
    if unknown:
        raise SourceError(f"{where}: no longer pins {', '.join(unknown)}; drop them from PARALLEL_DRIVER_OVERRIDES "
                          f"in components/generate.py")
    dependencies = [{"pip": [*pins.values(), *PARALLEL_DRIVER]} if d is pip else d for d in conda["dependencies"]]
    return {**conda, "name": f"{conda.get('name', PACKAGE_TAG)}-parallel", "dependencies": dependencies}


def command_lines(source: dict, v2: bool) -> list[str]:
    """The command, one flag a line, in the flavour's placeholder syntax."""
    lines = [line.strip() for line in str(source["command"]).strip().splitlines() if line.strip()]
    if not v2:
        return lines
    return [typed_to_v2(line) for line in lines]


def render_component(source_path: Path, v2: bool) -> str:
    """The text of one generated spec."""
    source = load_source(source_path)
    distributed = bool(source.get("distributed"))
    head = {
        "$schema": V2_SCHEMA if v2 else TYPED_SCHEMA.format("DistributedComponent" if distributed
                                                            else "CommandComponent"),
        "name": source["name"] if v2 else source["name"] + TYPED_SUFFIX,
        "version": __version__,
        "display_name": source["display_name"],
        "type": "command" if v2 else ("DistributedComponent" if distributed else "CommandComponent"),
        "description": " ".join(str(source["description"]).split()),
        "tags": {"category": source["category"], "package": PACKAGE_TAG,
                 "flavour": "v2" if v2 else "designer-typed"},
        "is_deterministic": True,
        "inputs": _inputs(source, v2),
        "outputs": _outputs(source, v2),
        "code": "../src" if v2 else "../../src",
        "environment": _environment(v2),
    }
    text = _header(source_path) + _dump(head)
    lines = command_lines(source, v2)
    if not distributed:
        return text + _folded("command", lines)
    if v2:
        # One process per GPU by default; a pipeline node sets its own counts.
        text += _dump({"resources": {"instance_count": 1},
                       "distribution": {"type": "pytorch", "process_count_per_instance": 1}})
        return text + _folded("command", lines)
    # Azure ML's torch.distributed launcher under the name azure-ai-ml maps to a PyTorch
    # distribution: with `torch.distributed` the spec loads but cannot be a pipeline node.
    return text + "launcher:\n  type: pytorch\n  " + _folded("additional_arguments", lines).replace("\n  ", "\n    ")


def render_parallel(source_path: Path) -> str:
    """The text of a source's parallel flavour: a v2 parallel component running its entry script."""
    load_source(source_path)
    source = flavour(source_path.stem, PARALLEL)
    head = {
        "$schema": PARALLEL_SCHEMA,
        "name": source["name"],
        "version": __version__,
        "display_name": source["display_name"],
        "type": "parallel",
        "description": " ".join(str(source["description"]).split()),
        "tags": {"category": source["category"], "package": PACKAGE_TAG, "flavour": "v2-parallel"},
        "is_deterministic": True,
        "inputs": _inputs(source, True),
        "outputs": _outputs(source, True),
        "input_data": f"${{{{inputs.{source['input_data']}}}}}",
        **source["settings"],
    }
    task = {"type": "run_function", "code": "../../src", "entry_script": source["entry_script"],
            "environment": _environment(True, parallel=True)}
    text = _header(source_path) + _dump(head) + _dump({"task": task})
    return text + "  " + _folded("program_arguments", command_lines(source, True)).replace("\n  ", "\n    ")


def render_typed_pipeline() -> str:
    """The v2 pipeline with every job pointing at the designer-typed spec of its component."""
    doc = read_yaml(PIPELINE, "the v2 pipeline, with `jobs`")
    if not isinstance(doc.get("jobs"), dict):
        raise SourceError(f"{_rel(PIPELINE)}: `jobs` must be a mapping of job names to jobs")
    for name, job in doc["jobs"].items():
        ref = str(job.get("component")) if isinstance(job, dict) else ""
        match = re.fullmatch(r"\.\./components/([\w-]+)\.yaml", ref)
        if not match:
            raise SourceError(f"{_rel(PIPELINE)}: job {name}: component must be ../components/<name>.yaml, "
                              f"got {ref!r}")
        if not (SOURCES / f"{match.group(1)}.yaml").is_file():
            raise SourceError(f"{_rel(PIPELINE)}: job {name}: {ref} has no source "
                              f"src/designer_resnet/components/{match.group(1)}.yaml")
        source = load_source(SOURCES / f"{match.group(1)}.yaml")
        job["type"] = "DistributedComponent" if source.get("distributed") else "CommandComponent"
        # azure-ai-ml needs the file: prefix for designer components in pipeline YAML.
        job["component"] = f"file:../components/typed/{match.group(1)}.yaml"
        job.pop("outputs", None)
        _literal_process_count(job, doc["inputs"])
    doc["display_name"] = f"{doc.get('display_name', 'pipeline')} (designer-typed components)"
    # Pipeline outputs are v2 types; a typed pipeline leaves its outputs in the jobs.
    doc["outputs"] = {}
    head = ("# Generated by components/generate.py from pipelines/image_classification.yml: the same pipeline with\n"
            "# the designer-typed components. Needs AZURE_ML_INTERNAL_COMPONENTS_ENABLED=true in azure-ai-ml and az ml.\n"
            "# A designer-typed node takes no pipeline input as its processes per node: it is the input's default\n"
            "# here; change it with --set jobs.<job>.distribution.process_count_per_instance=N.\n")
    return head + _dump(doc)


def _literal_process_count(job: dict, inputs: dict) -> None:
    """A job's processes per node bound to a pipeline input, replaced by that input's value (typed nodes need one)."""
    distribution = job.get("distribution")
    count = distribution.get("process_count_per_instance") if isinstance(distribution, dict) else None
    match = _BINDING.fullmatch(count) if isinstance(count, str) else None
    if match and match.group(1) == "inputs" and match.group(2) in inputs:
        distribution["process_count_per_instance"] = inputs[match.group(2)]


# A pipeline component's data input has no default, and a batch endpoint is invoked with data (uri_folder,
# uri_file) and literals only: a model input of the pipeline is bound, with its path, in the jobs that use it.
_MODEL_TYPES = ("mlflow_model", "custom_model", "triton_model")
_LITERAL_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"))
# What a job's output may say that only a pipeline job acts on (registering it as a named asset).
_JOB_ONLY_OUTPUT_KEYS = ("name", "version")


class PipelineComponent(NamedTuple):
    """A pipeline component generated from a pipeline YAML: the same jobs (or `jobs`, a part of them).

    `computes`: each job's compute becomes an input (`compute` for the jobs on the pipeline's default
    compute, `<job>_compute` for a job with its own), so the designer asks for them. `external` names the
    component inputs that replace the part's bindings to jobs left out (`job.input` -> input name).
    """

    source: Path
    target: Path
    name: str
    note: str
    computes: bool = False
    display_name: str | None = None
    description: str | None = None
    jobs: tuple[str, ...] = ()
    external: tuple[tuple[str, str], ...] = ()


_DESIGNER_NOTE = ("# Generated by components/generate.py from pipelines/{source}: edit that file and run\n"
                  "# `python components/generate.py`, not this one. {what} as one block for the designer canvas\n"
                  "# (register it with `designer-resnet register`, or `az ml component create --file` this file).\n")
PIPELINE_COMPONENTS = (
    PipelineComponent(
        BATCH_PIPELINE, BATCH_COMPONENT, BATCH_COMPONENT_NAME,
        "# Generated by components/generate.py from pipelines/batch_scoring.yml: edit that file and run\n"
        "# `python components/generate.py`, not this one. The pipeline as a component, for\n"
        "# deploy/batch-deployment.yml; its model input is bound in the jobs (a batch endpoint takes data and\n"
        "# literals only), and azure-ai-ml resolves @latest when it registers the component.\n"),
    PipelineComponent(
        PIPELINE, PIPELINE_DIR / "image_classification.yaml", "designer_resnet_image_classification",
        _DESIGNER_NOTE.format(source=PIPELINE.name, what="The whole image-classification pipeline"), computes=True),
    PipelineComponent(
        PIPELINE, PIPELINE_DIR / "train_and_score.yaml", "designer_resnet_train_and_score",
        _DESIGNER_NOTE.format(source=PIPELINE.name, what="Its ResNet, Train, Score and Evaluate jobs"),
        computes=True, display_name="ResNet train, score and evaluate",
        description="Create a ResNet (ImageNet weights by default), train it on prepared ImageDirectories "
                    "(distributed on a GPU cluster), score the test ImageDirectory and evaluate.",
        jobs=("resnet", "train", "score", "evaluate"),
        external=(("train.training_data", "training_data"), ("train.validation_data", "validation_data"),
                  ("score.dataset", "test_data"))),
)
# Descriptions of the inputs that feed a job's run settings rather than a component's input.
_SETTING_DESCRIPTIONS = {
    "node_count": "Nodes of the training cluster (default 1).",
    "processes_per_node": "Training processes per node, one per GPU (default 1; 8 on an 8-GPU node).",
}
_BINDING = re.compile(r"\$\{\{parent\.(inputs|jobs)\.([\w]+)(?:\.outputs\.(\w+))?\}\}")


def _bindings(value) -> list[str]:
    """The `${{parent...}}` expressions in a job's input value (a binding, or a mapping with `path`)."""
    text = value.get("path") if isinstance(value, dict) else value
    return [m.group(0) for m in _BINDING.finditer(text)] if isinstance(text, str) else []


def _component_inputs(pipeline: dict, source: Path) -> tuple[dict, dict]:
    """The pipeline's inputs as a component's (types; literals as defaults), and the bindings of its model inputs."""
    inputs, bound = {}, {}
    for name, value in pipeline["inputs"].items():
        if isinstance(value, dict):
            kind = value.get("type")
            if kind in _MODEL_TYPES and not value.get("path"):
                raise SourceError(f"{_rel(source)}: input {name}: a model input needs the `path` of a "
                                  f"registered model, which the pipeline component binds in its jobs")
            if kind in _MODEL_TYPES:
                bound[f"${{{{parent.inputs.{name}}}}}"] = {"type": kind, "path": value["path"]}
            else:
                inputs[name] = {"type": kind}
            continue
        kind = next((t for python_type, t in _LITERAL_TYPES if isinstance(value, python_type)), None)
        if kind is None:
            raise SourceError(f"{_rel(source)}: input {name}: {value!r} is neither a data input (a mapping "
                              f"with `type`) nor a literal")
        inputs[name] = {"type": kind, "default": value}
    return inputs, bound


def _part(spec: PipelineComponent, doc: dict, inputs: dict) -> tuple[dict, dict]:
    """The jobs the component holds, bindings to jobs left out replaced by new data inputs; the inputs they use."""
    if not spec.jobs:
        return doc["jobs"], inputs
    missing = [name for name in spec.jobs if name not in doc["jobs"]]
    if missing:
        raise SourceError(f"{_rel(spec.source)}: {spec.name} takes jobs {', '.join(missing)}, which it lacks")
    external = dict(spec.external)
    jobs, used = {}, {}
    for name in spec.jobs:
        job = {**doc["jobs"][name], "inputs": dict(doc["jobs"][name].get("inputs") or {})}
        for key, value in job["inputs"].items():
            for binding in _bindings(value):
                kind, target = _BINDING.fullmatch(binding).group(1, 2)
                if kind == "inputs":
                    used[target] = inputs[target]
                elif target not in spec.jobs:
                    if f"{name}.{key}" not in external:
                        raise SourceError(f"{_rel(spec.source)}: {spec.name}: job {name}'s input {key} comes from "
                                          f"job {target}, which it leaves out; name an input for it in `external`")
                    new = external[f"{name}.{key}"]
                    used[new] = {"type": "uri_folder"}
                    job["inputs"][key] = (f"${{{{parent.inputs.{new}}}}}" if not isinstance(value, dict)
                                          else {**value, "path": f"${{{{parent.inputs.{new}}}}}"})
        for setting in ("resources", "distribution"):
            for binding in _bindings(" ".join(map(str, (job.get(setting) or {}).values()))):
                target = _BINDING.fullmatch(binding).group(2)
                used[target] = inputs[target]
        jobs[name] = job
    outputs = {}
    for name in spec.jobs:
        for out in (doc["jobs"][name].get("outputs") or {}).values():
            target = out[len("${{parent.outputs."):-2] if isinstance(out, str) else None
            if target in doc["outputs"]:
                outputs[target] = doc["outputs"][target]
    doc["outputs"] = outputs
    return jobs, {key: used[key] for key in [*inputs, *used] if key in used}


def _computes(doc: dict, jobs: dict) -> dict:
    """Every job's compute as a component input: `compute` for the default's jobs, `<job>_compute` for the rest."""
    default = (doc.get("settings") or {}).get("default_compute")
    inputs = {}
    for name, job in jobs.items():
        own = job.get("compute")
        key, value = (f"{name}_compute", own) if own else ("compute", default)
        if value is None:
            continue
        inputs[key] = {"type": "string", "default": str(value).removeprefix("azureml:"),
                       "description": f"Compute cluster of job {name}." if own else
                                      "Compute cluster of the jobs that name none of their own."}
        jobs[name] = {**job, "compute": f"${{{{parent.inputs.{key}}}}}"}
    return inputs


def render_pipeline_component(spec: PipelineComponent) -> str:
    """A pipeline YAML as a pipeline component (what a batch endpoint deploys, or one designer block)."""
    doc = read_yaml(spec.source, "a pipeline, with `inputs`, `outputs` and `jobs`")
    for key in ("inputs", "outputs", "jobs"):
        if not isinstance(doc.get(key), dict):
            raise SourceError(f"{_rel(spec.source)}: `{key}` must be a mapping")
    inputs, bound = _component_inputs(doc, spec.source)
    source_jobs, inputs = _part(spec, doc, inputs)
    jobs = {}
    for name, job in source_jobs.items():
        target = (spec.source.parent / str(job.get("component") if isinstance(job, dict) else "")).resolve()
        if not isinstance(job, dict) or target.suffix != ".yaml" or not target.is_file():
            raise SourceError(f"{_rel(spec.source)}: job {name}: component must be the path of a spec under "
                              f"components/, got {job.get('component') if isinstance(job, dict) else job!r}")
        job = {**job, "component": Path(os.path.relpath(target, spec.target.parent)).as_posix()}
        if isinstance(job.get("inputs"), dict):
            job["inputs"] = {k: dict(bound[v]) if isinstance(v, str) and v in bound else v
                             for k, v in job["inputs"].items()}
        jobs[name] = job
    if spec.computes:
        inputs.update(_computes(doc, jobs))
    outputs = {name: {k: v for k, v in out.items() if k not in _JOB_ONLY_OUTPUT_KEYS}
               for name, out in doc["outputs"].items()}
    head = {
        "$schema": PIPELINE_COMPONENT_SCHEMA,
        "name": spec.name,
        "version": __version__,
        "display_name": spec.display_name or doc.get("display_name", spec.name),
        "type": "pipeline",
        "description": spec.description or " ".join(str(doc.get("description", "")).split()),
        "tags": {"package": PACKAGE_TAG},
        "inputs": _described(inputs, jobs) if spec.computes else inputs,
        "outputs": outputs,
        "jobs": jobs,
    }
    return spec.note + _dump(head)


def _described(inputs: dict, jobs: dict) -> dict:
    """Each input bound to a component's input takes that input's description (the designer shows it)."""
    described = {name: {**entry, "description": _SETTING_DESCRIPTIONS[name]} if name in _SETTING_DESCRIPTIONS
                 else dict(entry) for name, entry in inputs.items()}
    for job in jobs.values():
        source = SOURCES / f"{Path(str(job['component'])).stem}.yaml"
        ports = {**load_source(source)["inputs"]} if source.is_file() else {}
        for key, value in (job.get("inputs") or {}).items():
            for binding in _bindings(value):
                kind, name = _BINDING.fullmatch(binding).group(1, 2)
                if kind == "inputs" and key in ports and "description" not in described[name]:
                    described[name]["description"] = " ".join(str(ports[key]["description"]).split())
    return described


def generated() -> dict[Path, str]:
    """Every generated file and the text it should have."""
    files = {}
    for source in sorted(SOURCES.glob("*.yaml")):
        files[V2_DIR / source.name] = render_component(source, v2=True)
        files[TYPED_DIR / source.name] = render_component(source, v2=False)
        if PARALLEL in read_yaml(source, "a component source"):
            files[PARALLEL_DIR / f"{flavour(source.stem, PARALLEL)['name']}.yaml"] = render_parallel(source)
    files[TYPED_PIPELINE] = render_typed_pipeline()
    for spec in PIPELINE_COMPONENTS:
        files[spec.target] = render_pipeline_component(spec)
    return files


def stale_or_orphaned() -> list[Path]:
    """Generated files whose text differs from what the sources give, and specs with no source."""
    files = generated()
    stale = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
    orphans = [p for d in GENERATED_DIRS for p in sorted(d.glob("*.yaml")) if p not in files]
    return stale + orphans


def main(argv: list[str]) -> int:
    parser = ComponentArgumentParser(prog="components/generate.py", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="list stale generated files; exit 1 if any")
    args = parser.parse_args(argv)
    try:
        return _generate(check=args.check)
    except SourceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def _generate(check: bool) -> int:
    if check:
        bad = stale_or_orphaned()
        for path in bad:
            print(f"stale: {path.relative_to(REPO)}")
        if bad:
            print("run: python components/generate.py")
        return 1 if bad else 0
    for folder in GENERATED_DIRS:
        folder.mkdir(exist_ok=True)
    files = generated()
    for path, text in files.items():
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
    for d in GENERATED_DIRS:
        for orphan in sorted(d.glob("*.yaml")):
            if orphan not in files:
                orphan.unlink()
                print(f"removed {orphan.relative_to(REPO)} (no source)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
