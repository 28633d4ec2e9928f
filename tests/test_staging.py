"""StagedOutput: publish with `_meta.yaml` last, one writer per output folder, leftovers of killed runs cleaned.

Also Split Image Directory's refusal of overlapping outputs, which StagedOutput alone cannot see in time.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from designer_resnet.directories import staging
from designer_resnet.directories.staging import STAGING_PREFIX, StagedOutput
from designer_resnet.errors import UserError

from conftest import make_image, run_module

SRC = Path(__file__).resolve().parents[1] / "src"


def _python(script: str, *args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(SRC) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def _write_port(folder: Path) -> None:
    """A small port folder: entries on both sides of `_meta.yaml` in sort order."""
    (folder / "_meta.yaml").write_text("type: ImageDirectory\n")
    (folder / "_schema.json").write_text("{}")
    (folder / "image").mkdir()
    (folder / "image" / "0_0.png").write_bytes(b"x")
    (folder / "images.lst").write_text("{}\n")


def _watch_moves(monkeypatch, out: Path, before_move=None) -> list[str]:
    """The names StagedOutput moves into `out`, in order; `before_move(names so far)` runs before each move."""
    real = os.replace
    moves = []

    def replace(src, dst, *a, **k):
        if Path(dst).parent == out:
            moves.append(Path(dst).name)
            if before_move is not None:
                before_move(moves)
        return real(src, dst, *a, **k)

    monkeypatch.setattr(staging.os, "replace", replace)
    return moves


def _refusal(out: Path, **kwargs) -> str:
    """The message StagedOutput(out, **kwargs) is refused with, checked to be one line."""
    with pytest.raises(UserError) as info:
        with StagedOutput(out, **kwargs):
            pass
    message = str(info.value)
    assert "\n" not in message
    return message


# 1. publishing: `_meta.yaml` last, nothing half-written on a failed or killed publish

def test_publish_failure_between_moves_leaves_no_meta_and_nothing_half_written(tmp_path, monkeypatch):
    out = tmp_path / "out"

    def disk_full_at_the_second(moves):
        if len(moves) == 2:
            raise OSError(28, "No space left on device")

    _watch_moves(monkeypatch, out, disk_full_at_the_second)
    with pytest.raises(UserError, match=r"^output: cannot move the result into .*out.*; ") as info:
        with StagedOutput(out) as stage:
            _write_port(stage.path)
    assert "\n" not in str(info.value)
    assert not out.exists()  # this run created it, so it is gone again


def test_publish_killed_between_moves_leaves_no_meta(tmp_path):
    """A real kill -9 between two renames of the publish: `_meta.yaml` must not be there."""
    out = tmp_path / "out"
    child = _python("""
        import os, signal, sys
        from pathlib import Path
        from designer_resnet.directories.staging import StagedOutput
        out = Path(sys.argv[1])
        moves = []
        def killing(real):
            def move(src, dst, *a, **k):
                if Path(dst).parent == out:
                    moves.append(src)
                    if len(moves) == 2:
                        os.kill(os.getpid(), signal.SIGKILL)
                return real(src, dst, *a, **k)
            return move
        os.replace, os.rename = killing(os.replace), killing(os.rename)
        with StagedOutput(out) as stage:
            p = stage.path
            (p / "_meta.yaml").write_text("type: ImageDirectory\\n")
            (p / "_schema.json").write_text("{}")
            (p / "image").mkdir()
            (p / "image" / "0_0.png").write_bytes(b"x")
            (p / "images.lst").write_text("{}\\n")
        """, str(out))
    child.communicate(timeout=60)
    assert child.returncode == -signal.SIGKILL
    names = {p.name for p in out.iterdir()}
    assert "_meta.yaml" not in names
    assert any(n.startswith(STAGING_PREFIX) for n in names)  # recognisably unfinished
    # the next writer of the folder cleans the leftover up and publishes a whole port
    with StagedOutput(out) as stage:
        _write_port(stage.path)
    assert {p.name for p in out.iterdir()} == {"_meta.yaml", "_schema.json", "image", "images.lst"}


def test_publish_moves_meta_last_and_leaves_no_lock_or_staging(tmp_path, monkeypatch):
    out = tmp_path / "out"
    order = _watch_moves(monkeypatch, out)
    with StagedOutput(out) as stage:
        _write_port(stage.path)
    assert order[-1] == "_meta.yaml" and sorted(order) == ["_meta.yaml", "_schema.json", "image", "images.lst"]
    assert {p.name for p in out.iterdir()} == {"_meta.yaml", "_schema.json", "image", "images.lst"}


# 2. one writer per output folder

_HOLDER = """
    import sys
    from designer_resnet.directories.staging import StagedOutput
    with StagedOutput(sys.argv[1], output_name="output_path") as stage:
        (stage.path / "_meta.yaml").write_text("type: Holder\\n")
        print("ready", flush=True)
        sys.stdin.readline()
    """


def test_second_writer_is_refused_while_the_first_runs(tmp_path):
    out = tmp_path / "out"
    holder = _python(_HOLDER, str(out), stdin=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == "ready"
        staged = [p for p in out.iterdir() if p.name.startswith(STAGING_PREFIX)]
        message = _refusal(out, output_name="output_path")
        assert message.startswith(f"output_path: {out} is being written by another run (pid {holder.pid}); ")
        assert all(p.exists() for p in staged)  # the first run's work is untouched
    finally:
        out_text, err = holder.communicate("\n", timeout=60)
    assert holder.returncode == 0, err
    assert {p.name for p in out.iterdir()} == {"_meta.yaml"}  # no lock file, no staging folder


def test_two_writers_in_one_process_are_refused(tmp_path):
    out = tmp_path / "out"
    with StagedOutput(out, output_name="first") as first:
        with pytest.raises(UserError, match=rf"^second: .* is being written by another run \(pid {os.getpid()}\); "):
            with StagedOutput(out, output_name="second"):
                pass
        assert first.path.is_dir()
        (first.path / "_meta.yaml").write_text("type: X\n")
    assert {p.name for p in out.iterdir()} == {"_meta.yaml"}


def test_killed_writer_leaves_no_stale_lock(tmp_path):
    out = tmp_path / "out"
    holder = _python(_HOLDER, str(out), stdin=subprocess.PIPE)
    assert holder.stdout.readline().strip() == "ready"
    holder.kill()
    holder.communicate(timeout=60)
    with StagedOutput(out) as stage:
        _write_port(stage.path)
    assert {p.name for p in out.iterdir()} == {"_meta.yaml", "_schema.json", "image", "images.lst"}


# 3. Split Image Directory: the two outputs must be separate folders

@pytest.mark.parametrize("first,second", [("out", "out"), ("out", "./out/"), ("out", "out/inner"), ("out/inner", "out")])
def test_split_refuses_overlapping_outputs_and_writes_nothing(tmp_path, first, second):
    for i in range(4):
        make_image(tmp_path / "src" / f"{i}.png")
    result = run_module("split_image_directory", "--input_path", "src", "--fraction", "0.5",
                        "--output_path1", first, "--output_path2", second, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: output_path2: "), result.stderr
    assert "output_path1" in lines[0] and "choose" in lines[0]
    assert not (tmp_path / "out").exists()


# 4. an output folder that cannot be written

def test_unwritable_output_folder_is_one_line(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(staging.tempfile, "mkdtemp", denied)
    message = _refusal(out, output_name="output_path")
    assert message.startswith(f"output_path: cannot write in {out} (Permission denied); ")
    assert "writable" in message
    assert out.is_dir() and not any(out.iterdir())


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_one_line_cli(tmp_path):
    make_image(tmp_path / "src" / "a" / "0.png")
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        result = run_module("convert_to_image_directory", "--input_path", tmp_path / "src", "--output_path", out)
    finally:
        out.chmod(0o755)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"error: output_path: cannot write in {out} (Permission denied); ")


# 5. a staging folder left by a killed run

def test_leftover_staging_folder_is_removed_by_the_next_writer(tmp_path):
    for name in ("a", "b"):
        make_image(tmp_path / "src" / name / "0.png")
    out = tmp_path / "out"
    leftover = out / f"{STAGING_PREFIX}staging-99999-dead"
    make_image(leftover / "image" / "0_0.png")  # what a Convert killed mid-copy leaves
    result = run_module("convert_to_image_directory", "--input_path", tmp_path / "src", "--output_path", out)
    assert result.returncode == 0, result.stderr
    assert not leftover.exists()
    assert not [p for p in out.iterdir() if p.name.startswith(STAGING_PREFIX)]
    assert (out / "_meta.yaml").exists()


def test_an_unfinished_output_is_never_read_as_images(tmp_path):
    """Killed mid-copy (only a staging folder) or mid-publish (files but no `_meta.yaml`): readers refuse it."""
    from designer_resnet.data.convert import convert_to_image_directory
    from designer_resnet.directories.image_directory import ImageDirectory
    from designer_resnet.directories.meta import META_FILE

    from conftest import write_labelled_set

    write_labelled_set(tmp_path / "raw", 3)
    convert_to_image_directory(tmp_path / "raw", tmp_path / "done")
    half = tmp_path / "half_published"
    shutil.copytree(tmp_path / "done", half)
    (half / META_FILE).unlink()
    mid_copy = tmp_path / "mid_copy"
    shutil.copytree(tmp_path / "done" / "image", mid_copy / f"{STAGING_PREFIX}staging-123-x" / "image")
    for folder in (half, mid_copy):
        with pytest.raises(UserError, match="is an unfinished output .* run that step again"):
            ImageDirectory.load(folder, input_name="input_path")
