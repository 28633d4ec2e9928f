"""Write the folders the studio's "Upload from folder" takes, one per component, and the pipeline components.

    python components/bundle.py                      # into build/bundle/ (what `make bundle` runs)
    python components/bundle.py --output DIR

The studio registers a command (or parallel) component from a folder whose spec names its code as
`code: .` or a folder below it, never `../`. `mldesigner compile` writes exactly that: per spec,
`<name>/<name>.yaml` beside a copy of this package. The pipeline components (components/pipeline/) cannot
be uploaded from a folder and mldesigner does not compile YAML pipeline components, so they are written
to `pipeline/<name>.yaml` referring to their components by name and version (`azureml:<name>:<version>`):
register the components first (from their folders, or with `designer-resnet register`), then
`az ml component create --file pipeline/<name>.yaml`. No file in the bundle refers to a path outside its
folder.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
COMPONENTS = REPO / "components"
# The specs the studio can upload from a folder, by kind.
UPLOADABLE = ("*.yaml", "parallel/*.yaml")
PIPELINE_COMPONENTS = COMPONENTS / "pipeline"
PIPELINE_FOLDER = "pipeline"
DEFAULT_OUTPUT = REPO / "build" / "bundle"
# A compiled snapshot's stray files (src/.amlignore says the same to Azure ML for a checkout).
_NOT_CODE = ("__pycache__", "*.egg-info", "_assets")


class BundleError(Exception):
    """Something the bundle cannot be made from; main prints it as one `error:` line."""


def compile_components(output: Path) -> list[Path]:
    """`mldesigner compile` of every uploadable spec into `output`: one folder per component."""
    mldesigner = Path(sys.executable).with_name("mldesigner")
    if not mldesigner.exists():
        raise BundleError(f"mldesigner is not installed beside {sys.executable}; run `make bundle`, which "
                          "installs it (pip install -e '.[azure]')")
    env = {k: v for k, v in os.environ.items() if k != "AZURE_ML_INTERNAL_COMPONENTS_ENABLED"}
    for pattern in UPLOADABLE:
        if not glob.glob(str(COMPONENTS / pattern)):
            continue
        result = subprocess.run([str(mldesigner), "compile", "--source", str(COMPONENTS / pattern),
                                 "--output", str(output)], capture_output=True, text=True, env=env, timeout=600)
        if result.returncode != 0:
            failed = [line for line in (result.stdout + result.stderr).splitlines() if "failed" in line.lower()]
            raise BundleError(f"mldesigner compile of components/{pattern} failed: "
                              f"{(failed or ['see its output'])[-1].strip()}")
    folders = sorted(p for p in output.iterdir() if p.is_dir() and p.name != PIPELINE_FOLDER)
    for folder in folders:
        for pattern in _NOT_CODE:
            for stray in folder.rglob(pattern):
                shutil.rmtree(stray) if stray.is_dir() else stray.unlink()
    return folders


def by_reference(pipeline_spec: Path) -> dict:
    """A pipeline component with each job's `component: <path>` replaced by `azureml:<name>:<version>`."""
    doc = yaml.safe_load(pipeline_spec.read_text(encoding="utf-8"))
    for name, job in doc["jobs"].items():
        target = (pipeline_spec.parent / str(job["component"])).resolve()
        if not target.is_file():
            raise BundleError(f"{pipeline_spec.name}: job {name}: {job['component']} does not exist; run "
                              "python components/generate.py")
        child = yaml.safe_load(target.read_text(encoding="utf-8"))
        job["component"] = f"azureml:{child['name']}:{child['version']}"
    return doc


def write_bundle(output: Path) -> list[Path]:
    """The whole bundle, built in a scratch folder and moved to `output` (replacing it) only when complete."""
    output = output.resolve()
    if output == REPO or REPO.is_relative_to(output):
        raise BundleError(f"--output {output}: would replace the repository; give a folder of its own")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}-") as scratch:
        staged = Path(scratch) / "bundle"
        staged.mkdir()
        folders = compile_components(staged)
        (staged / PIPELINE_FOLDER).mkdir()
        pipelines = []
        for spec in sorted(PIPELINE_COMPONENTS.glob("*.yaml")):
            target = staged / PIPELINE_FOLDER / spec.name
            target.write_text(yaml.safe_dump(by_reference(spec), sort_keys=False, width=100), encoding="utf-8")
            pipelines.append(target)
        if output.exists():
            shutil.rmtree(output)
        staged.rename(output)
    return [output / f.name for f in folders] + [output / PIPELINE_FOLDER / p.name for p in pipelines]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="components/bundle.py", description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help="folder to write (replaced); default build/bundle")
    args = parser.parse_args(argv)
    try:
        written = write_bundle(args.output)
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in written:
        print(f"wrote {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}")
    print(f"{len(written)} components in {args.output}: upload each command component's folder with the studio's "
          "Components > New component > Upload from folder; register the parallel one and then "
          f"{PIPELINE_FOLDER}/*.yaml with az ml component create --file")
    return 0


if __name__ == "__main__":
    sys.exit(main())
