"""The `designer-resnet` command and the entry modules' argument handling."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from designer_resnet.components import COMPONENTS
from designer_resnet.arguments import boolean, float_in, int_in

from conftest import run_module


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "designer_resnet.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_help_lists_every_subcommand():
    result = _cli("--help")
    assert result.returncode == 0
    for sub in [*COMPONENTS, "demo"]:
        assert f"  {sub} " in result.stdout


@pytest.mark.parametrize("module", sorted(COMPONENTS.values()))
def test_each_component_module_has_help(module):
    result = run_module(module, "--help")
    assert result.returncode == 0 and result.stdout.startswith(f"usage: {module}")


def test_unknown_subcommand_exits_1():
    result = _cli("trian")
    assert result.returncode == 1 and "unknown command 'trian'" in result.stderr


@pytest.mark.parametrize("text,value", [("True", True), ("false", False), ("TRUE", True), ("1", True), ("0", False),
                                        ("no", False)])
def test_booleans_accept_any_case(text, value):
    assert boolean(text) is value


def test_bad_values_are_rejected():
    with pytest.raises(argparse.ArgumentTypeError):
        boolean("maybe")
    with pytest.raises(argparse.ArgumentTypeError, match=r"outside the valid range \[1, 5\]"):
        int_in(1, 5)("7")
    with pytest.raises(argparse.ArgumentTypeError, match="finite"):
        float_in()("nan")


def test_bad_parameter_is_one_line_exit_1(tmp_path):
    result = _cli("init-transform", "--output_path", tmp_path / "t", "--crop_size", "0")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: init_image_transformation: argument --crop_size: 0 is outside the valid range [1, 8192] (see --help)"]
    assert not (tmp_path / "t").exists()
    result = _cli("init-transform", "--output_path", tmp_path / "t", "--resize", "maybe")
    assert result.returncode == 1 and "expected true or false, got 'maybe'" in result.stderr


def test_debug_shows_the_traceback(tmp_path):
    result = _cli("convert", "--input_path", tmp_path / "missing", "--output_path", tmp_path / "out", "--debug")
    assert result.returncode == 1 and "Traceback" in result.stderr and "does not exist" in result.stderr
