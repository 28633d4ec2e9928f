"""What a component spec says, in either flavour: v2 command or designer-typed.

The v2 flavour (`type: command`) has Azure ML's v2 port types (`uri_folder`,
`mlflow_model`) and `${{inputs.x}}` / `$[[...]]` command syntax; the designer
port type a folder port expects is named in its description as
"Designer type: <type>." The typed flavour (`CommandComponent`,
`DistributedComponent`) has the designer's port types and `{inputs.x}` /
`[...]` syntax. Both are generated from `designer_resnet/components/*.yaml` by
`components/generate.py`; this module is the one place that reads them.
"""

from __future__ import annotations

import re
import shlex

from .errors import UserError

V2_TYPE = "command"
# A v2 parallel component (Azure ML's parallel job): v2 syntax; its command is `task.program_arguments`.
PARALLEL_TYPE = "parallel"
TYPED_TYPES = ("CommandComponent", "DistributedComponent")
# A port of this designer type takes any folder.
ANY_PORT = "AnyDirectory"
DESIGNER_PORT_TYPES = ("AnyDirectory", "ImageDirectory", "UntrainedModelDirectory", "ModelDirectory",
                       "DataFrameDirectory", "TransformationDirectory")
# v2 type of each designer folder type; every other folder is a uri_folder.
V2_PORT_TYPE = {"ModelDirectory": "mlflow_model"}
V2_FOLDER = "uri_folder"
# Every v2 data (port) type azure-ai-ml knows for a component input or output.
V2_DATA_TYPES = ("uri_folder", "uri_file", "mltable", "mlflow_model", "custom_model", "triton_model", "path")
# Designer parameter type -> v2 input type (an Enum is a v2 string with `enum`).
V2_PARAM_TYPE = {"Integer": "integer", "Float": "number", "Boolean": "boolean", "String": "string", "Enum": "string"}
# A designer-typed spec is named <v2 name><TYPED_SUFFIX>, so both flavours register in one workspace.
TYPED_SUFFIX = "_typed"
_DESIGNER_NOTE = "Designer type: {}."
# An input that takes folders of several designer types lists them (a source's `type: [A, B]`), named "A or B".
PORT_UNION = " or "
_DESIGNER_NOTE_RE = re.compile(r"Designer type: (\w+(?: or \w+)*)\.")

# Placeholders and optional blocks of each flavour's command.
_SYNTAX = {
    "v2": (re.compile(r"\$\{\{\s*(inputs|outputs)\.([\w-]+)\s*\}\}"), re.compile(r"\$\[\[(.*?)\]\]", re.DOTALL)),
    "typed": (re.compile(r"\{(inputs|outputs)\.([\w-]+)\}"), re.compile(r"\[([^\[\]]*)\]")),
}


def port_name(kind) -> str:
    """A port's designer type as one name: itself, or "A or B" for an input that takes several (a list)."""
    return PORT_UNION.join(kind) if isinstance(kind, (list, tuple)) else str(kind)


def port_kinds(kind) -> list[str]:
    """The designer types a port takes: [kind], or each type of a list or of an "A or B" name."""
    if isinstance(kind, (list, tuple)):
        return [str(k) for k in kind]
    return str(kind).split(PORT_UNION)


def accepts(wanted: str, given: str) -> bool:
    """True when an input of port type `wanted` takes a folder of type `given` (AnyDirectory takes any)."""
    return wanted == ANY_PORT or given in port_kinds(wanted)


def designer_note(port_type) -> str:
    """The sentence a port description ends with, naming the designer type(s) of the folder."""
    return _DESIGNER_NOTE.format(port_name(port_type))


def flavour(spec: dict) -> str:
    """'v2' or 'typed'; UserError for anything else."""
    kind = spec.get("type") if isinstance(spec, dict) else None
    if kind in (V2_TYPE, PARALLEL_TYPE):
        return "v2"
    if kind in TYPED_TYPES:
        return "typed"
    raise UserError(f"component type {kind!r} is not one this runner knows; use a v2 `command` or `parallel` "
                    f"component or a designer {' or '.join(TYPED_TYPES)}")


def port_type(spec: dict, direction: str, port: str) -> str | None:
    """The designer port type of an input or output; None if the spec has no such port.

    A v2 port whose description names no designer type gives its v2 type.
    """
    entry = (spec.get(direction) or {}).get(port)
    if not isinstance(entry, dict):
        return None
    if flavour(spec) == "typed":
        return port_name(entry.get("type"))
    note = _DESIGNER_NOTE_RE.search(str(entry.get("description") or ""))
    return note.group(1) if note else entry.get("type")


def is_parallel(spec: dict) -> bool:
    """True for a v2 parallel component."""
    return spec.get("type") == PARALLEL_TYPE


def _task(spec: dict) -> dict:
    task = spec.get("task")
    return task if isinstance(task, dict) else {}


def command_template(spec: dict) -> str:
    """The command line template: `command`, a DistributedComponent's launcher arguments, or a parallel
    component's program arguments (its entry script gets them; there is no `python` in front)."""
    if is_parallel(spec):
        return str(_task(spec).get("program_arguments") or "")
    return spec.get("command") or (spec.get("launcher") or {}).get("additional_arguments") or ""


def code_folder(spec: dict) -> str:
    """The spec's code snapshot folder, relative to the spec (a parallel component's is its task's)."""
    return str((_task(spec) if is_parallel(spec) else spec).get("code", "."))


def entry_script(spec: dict) -> str:
    """A parallel component's entry script, relative to its code folder."""
    return str(_task(spec).get("entry_script") or "")


def is_distributed(spec: dict, node: dict | None = None) -> bool:
    """True for a DistributedComponent, or a v2 component or node with a PyTorch distribution."""
    if spec.get("type") == "DistributedComponent":
        return True
    for source in (node or {}, spec):
        distribution = source.get("distribution")
        if isinstance(distribution, dict) and str(distribution.get("type", "")).lower() == "pytorch":
            return True
    return False


def placeholders(template: str, kind: str, *, outside_optional: bool = False) -> set[tuple[str, str]]:
    """(inputs|outputs, name) pairs the template refers to; with outside_optional, only outside optional blocks."""
    placeholder, optional = _SYNTAX[kind]
    return set(placeholder.findall(optional.sub("", template) if outside_optional else template))


def flags(template: str, kind: str) -> dict[tuple[str, str], str]:
    """The command-line flag in front of each placeholder: {(inputs|outputs, name): "--flag"}."""
    placeholder, _ = _SYNTAX[kind]
    found = {}
    for match in re.finditer(r"(--[\w-]+)\s+'?(" + placeholder.pattern + ")", template):
        found[(match.group(3), match.group(4))] = match.group(1)
    return found


def typed_to_v2(template: str) -> str:
    """A command in the typed (and source) syntax, `{inputs.x}` and `[...]`, in v2's `${{inputs.x}}` and `$[[...]]`."""
    placeholder, optional = _SYNTAX["typed"]
    return optional.sub(r"$[[\1]]", placeholder.sub(r"${{\1.\2}}", template))


def render(template: str, kind: str, values: dict[str, str]) -> list[str]:
    """The command as argv, rendered as Azure ML renders it: values put into the text, then split as a shell would.

    `values` maps "inputs.x"/"outputs.y" to their text (quote a value that may hold
    spaces with shlex.quote). An optional block is kept only when every placeholder
    in it has a value; any other placeholder without one is an error.
    """
    placeholder, optional = _SYNTAX[kind]

    def keep(block: re.Match) -> str:
        names = [f"{d}.{n}" for d, n in placeholder.findall(block.group(1))]
        return block.group(1) if all(n in values for n in names) else ""

    def sub(m: re.Match) -> str:
        key = f"{m.group(1)}.{m.group(2)}"
        if key not in values:
            raise UserError(f"the command needs {key}, which is neither given nor defaulted")
        return values[key]

    return shlex.split(placeholder.sub(sub, optional.sub(keep, template)))
