"""Developer tools and the extra commands under careless input (issue 15, round 3): one `error:` line, exit 1,
nothing written. The scripts run from copies in a temporary folder, so the real lock and specs are never touched;
the copies come from the checkout the imported package lives in."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import designer_resnet
from designer_resnet import cli

CHECKOUT = Path(designer_resnet.__file__).resolve().parents[2]


def _one_error_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


def _script(path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(path), *args], capture_output=True, text=True, timeout=120)


# Item 11: environments/lock.py refuses what it does not know instead of rewriting the lock.

@pytest.mark.parametrize("args", [["--chekc"], ["--check", "extra"], ["check"]])
def test_lock_refuses_an_unknown_argument_and_writes_nothing(tmp_path, args):
    folder = tmp_path / "environments"
    folder.mkdir()
    script = Path(shutil.copy(CHECKOUT / "environments" / "lock.py", folder / "lock.py"))
    for name in ("requirements.txt", "conda.yaml"):
        (folder / name).write_text("# hand-kept\n")
    _one_error_line(_script(script, *args), args[-1])
    assert [(folder / n).read_text() for n in ("requirements.txt", "conda.yaml")] == ["# hand-kept\n"] * 2


# Item 18: components/generate.py names the source file and what is wrong with it.

@pytest.fixture
def generator(tmp_path) -> Path:
    """A copy of the checkout's generator with the package sources, environments and pipeline it reads."""
    for part in ("components/generate.py", "environments/designer-resnet.yaml", "environments/conda.yaml",
                 "pipelines/image_classification.yml"):
        (tmp_path / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CHECKOUT / part, tmp_path / part)
    shutil.copytree(CHECKOUT / "src" / "designer_resnet", tmp_path / "src" / "designer_resnet",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "components" / "generate.py"


def _resnet_source(generator: Path) -> Path:
    return generator.parents[1] / "src" / "designer_resnet" / "components" / "resnet.yaml"


def _without(key: str):
    def edit(text: str) -> str:
        doc = yaml.safe_load(text)
        del doc[key]
        return yaml.safe_dump(doc, sort_keys=False)
    return edit


SOURCE_DAMAGE = {
    "not-yaml": (lambda text: text + "\ninputs: [unclosed\n", "not valid YAML"),
    "no-command": (_without("command"), "lacks command"),
    "no-display-name": (_without("display_name"), "lacks display_name"),
    "a-list": (lambda text: "- name: resnet\n- command: python\n", "must be a mapping"),
    "empty": (lambda text: "", "got nothing"),
    "input-without-type": (lambda text: text.replace("    type: Enum\n", "", 1), "inputs.model_name lacks type"),
}


@pytest.mark.parametrize("damage", list(SOURCE_DAMAGE))
def test_generate_check_names_the_broken_source_in_one_line(generator, damage):
    edit, wording = SOURCE_DAMAGE[damage]
    source = _resnet_source(generator)
    source.write_text(edit(source.read_text()))
    _one_error_line(_script(generator, "--check"), "src/designer_resnet/components/resnet.yaml", wording)


def test_generate_refuses_an_unknown_argument_and_writes_nothing(generator):
    spec = generator.parent / "resnet.yaml"  # no generated specs were copied: a run would write them
    _one_error_line(_script(generator, "--chekc"), "--chekc")
    assert not spec.exists()


# Item 18: register and demo parse their arguments like every other command.

@pytest.mark.parametrize("argv", [["register", "--dry-run", "--bogus"], ["demo", "--bogus"], ["demo", "--epochs", "x"],
                                  ["run", "p.yml", "--bogus"]])
def test_unknown_argument_to_an_extra_command_is_one_line_and_exit_1(capsys, argv):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: designer-resnet {argv[0]}: ") and err.count("\n") == 1, err
