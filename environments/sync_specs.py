"""Write environments/conda.yaml and the base image into every component spec's `environment`.

Specs carry the environment inline (not as a file path) so that a spec packaged by
`mldesigner compile`, which moves the spec next to its code, is still complete.
Run after editing conda.yaml or designer-resnet.yaml:  python environments/sync_specs.py
tests/test_specs.py fails while a spec is out of step.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SPECS = HERE.parent / "components"
_BLOCK = re.compile(r"^environment:\n(?: .*\n)*", re.MULTILINE)


def environment_block() -> str:
    image = yaml.safe_load((HERE / "designer-resnet.yaml").read_text())["image"]
    conda = yaml.safe_load((HERE / "conda.yaml").read_text())
    env = {"docker": {"image": image}, "conda": {"conda_dependencies": conda}, "os": "Linux"}
    body = yaml.safe_dump({"environment": env}, sort_keys=False, default_flow_style=False)
    return ("# Generated from environments/ by environments/sync_specs.py; edit those files, not this block.\n"
            + body)


def sync(check: bool = False) -> list[Path]:
    """Rewrite (or, with check, list) the specs whose environment block differs."""
    block = environment_block()
    stale = []
    for spec in sorted(SPECS.glob("*.yaml")):
        text = spec.read_text()
        text_no_note = text.replace("# Generated from environments/ by environments/sync_specs.py; "
                                    "edit those files, not this block.\n", "")
        match = _BLOCK.search(text_no_note)
        if match is None:
            raise SystemExit(f"{spec.name}: no top-level environment block")
        new = text_no_note[:match.start()] + block + text_no_note[match.end():]
        if new != text:
            stale.append(spec)
            if not check:
                spec.write_text(new)
    return stale


if __name__ == "__main__":
    changed = sync(check="--check" in sys.argv)
    for spec in changed:
        print(("out of step: " if "--check" in sys.argv else "updated: ") + spec.name)
    sys.exit(1 if changed and "--check" in sys.argv else 0)
