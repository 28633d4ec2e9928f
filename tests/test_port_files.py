"""Port files (JSON, JSON Lines, YAML): every way one can be bad is one line, worded alike by every reader."""

from __future__ import annotations

import os

import pytest
import yaml

from designer_resnet.directories.dataframe_directory import read_dataframe_schema
from designer_resnet.directories.files import read_port_file, read_port_lines
from designer_resnet.directories.image_directory import ImageDirectory, ImageDirectoryWriter
from designer_resnet.directories.meta import read_meta, write_meta
from designer_resnet.directories.transformation_directory import (
    read_transformation_directory,
    write_transformation_directory,
)
from designer_resnet.errors import UserError
from designer_resnet.models.create import create_untrained_model
from designer_resnet.models.model_directory import read_untrained

from conftest import make_image

FIX = "rerun the step that wrote it"


def _refused(path, fmt="JSON", **kwargs) -> str:
    with pytest.raises(UserError) as info:
        read_port_file(path, fmt, input_name="x", fix=FIX, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.endswith(f"; {FIX}")
    return message


def test_a_good_file_reads_as_its_content(tmp_path):
    (tmp_path / "a.json").write_text('{"k": [1, 2]}')
    (tmp_path / "a.yaml").write_text("k: [1, 2]\n")
    assert read_port_file(tmp_path / "a.json", "JSON", input_name="x", fix=FIX) == {"k": [1, 2]}
    assert read_port_file(tmp_path / "a.yaml", "YAML", input_name="x", fix=FIX) == {"k": [1, 2]}


def test_missing_file_is_refused_or_its_default(tmp_path):
    assert _refused(tmp_path / "gone.json") == f"x: {tmp_path / 'gone.json'} does not exist; {FIX}"
    assert read_port_file(tmp_path / "gone.json", "JSON", input_name="x", fix=FIX, missing={}) == {}


def test_folder_is_refused(tmp_path):
    (tmp_path / "dir.yaml").mkdir()
    assert _refused(tmp_path / "dir.yaml", "YAML") == f"x: {tmp_path / 'dir.yaml'} is a folder; {FIX}"


def test_file_that_cannot_be_opened_is_refused_with_the_reason(tmp_path):
    loop = tmp_path / "loop.json"
    os.symlink(loop, loop)  # ELOOP: an OSError that is neither missing nor a folder, even for root
    assert _refused(loop) == f"x: {loop} cannot be read (Too many levels of symbolic links); {FIX}"


def test_text_that_is_not_utf8_is_refused(tmp_path):
    (tmp_path / "latin.yaml").write_bytes("type: caf\xe9\n".encode("latin-1"))
    assert _refused(tmp_path / "latin.yaml", "YAML") == (f"x: {tmp_path / 'latin.yaml'} cannot be read "
                                                         f"(it is not UTF-8 text); {FIX}")


def test_invalid_json_names_the_parser_line(tmp_path):
    (tmp_path / "bad.json").write_text('{"a": 1,\n')
    assert _refused(tmp_path / "bad.json").startswith(f"x: {tmp_path / 'bad.json'} is not valid JSON (")
    assert ", line 2)" in _refused(tmp_path / "bad.json")


def test_invalid_yaml_is_refused_by_its_first_line(tmp_path):
    (tmp_path / "bad.yaml").write_text("jobs:\n  a: {component: [\n")
    message = _refused(tmp_path / "bad.yaml", "YAML")
    assert message.startswith(f"x: {tmp_path / 'bad.yaml'} is not valid YAML (while parsing")


def test_yaml_that_asks_for_python_objects_is_not_executed(tmp_path):
    (tmp_path / "evil.yaml").write_text(f"type: !!python/object/apply:os.system ['touch {tmp_path / 'pwned'}']\n")
    assert " is not valid YAML (" in _refused(tmp_path / "evil.yaml", "YAML")
    assert not (tmp_path / "pwned").exists()


def test_json_of_the_wrong_shape_is_refused(tmp_path):
    (tmp_path / "list.json").write_text("[1]")
    assert _refused(tmp_path / "list.json") == (f"x: {tmp_path / 'list.json'} is not a JSON object "
                                                f"(it holds a list); {FIX}")
    (tmp_path / "object.json").write_text("{}")
    assert " is not a JSON list (it holds a dict); " in _refused(tmp_path / "object.json", kind=list)


def test_empty_yaml_is_refused_where_a_mapping_belongs_and_kept_where_anything_goes(tmp_path):
    (tmp_path / "empty.yaml").write_text("")
    assert _refused(tmp_path / "empty.yaml", "YAML") == (f"x: {tmp_path / 'empty.yaml'} is not a YAML mapping "
                                                         f"(it is empty); {FIX}")
    assert read_port_file(tmp_path / "empty.yaml", "YAML", input_name="x", fix=FIX, kind=None) is None


def test_json_lines_are_numbered_and_blank_lines_skipped(tmp_path):
    (tmp_path / "rows.lst").write_text('{"id": 0}\n\n{"id": 1}\n')
    assert list(read_port_lines(tmp_path / "rows.lst", input_name="x", fix=FIX)) == [(1, {"id": 0}), (3, {"id": 1})]


@pytest.mark.parametrize("content, problem", [
    (b"", "does not exist"),
    (b'{"id": 0}\n{"id": 1\n', "line 2 is not valid JSON (Expecting ',' delimiter)"),
    (b'{"id": 0}\n[1]\n', "line 2 is not a JSON object (it holds a list)"),
    (b'{"id": 0}\n{"c": "caf\xe9"}\n', "cannot be read (it is not UTF-8 text)"),
], ids=["missing", "invalid", "not_an_object", "not_utf8"])
def test_bad_json_lines_are_refused(tmp_path, content, problem):
    path = tmp_path / "rows.lst"
    if content:
        path.write_bytes(content)
    with pytest.raises(UserError) as info:
        list(read_port_lines(path, input_name="x", fix=FIX))
    assert str(info.value) == f"x: {path} {problem}; {FIX}"


# ---- the port readers: the same wording, each with its own fix ----

def _image_directory(root):
    with ImageDirectoryWriter(root, ["a"]) as writer:
        name = writer.target_name(0, "a", ".png")
        make_image(root / name)
        writer.add(name, 0, "a")


def _dataframe_directory(root):
    root.mkdir()
    write_meta(root, {"type": "DataFrameDirectory"})
    (root / "schema").mkdir()


READERS = {
    "meta": ("_meta.yaml", lambda root: root.mkdir(), lambda root: read_meta(root, input_name="x"),
             "connect the output of a designer module here"),
    "model_spec": ("model_spec.yaml",
                   lambda root: create_untrained_model(root, {"model_name": "resnet18", "pretrained": False}),
                   lambda root: read_untrained(root, input_name="x"),
                   "connect the output of a ResNet, DenseNet or Train PyTorch Model module"),
    "transforms": ("_transforms.json", lambda root: write_transformation_directory(root, []),
                   lambda root: read_transformation_directory(root, input_name="x"), "rerun Init Image Transformation"),
    "image_schema": ("_schema.json", _image_directory, lambda root: ImageDirectory.load(root, input_name="x"),
                     "rebuild the folder with Convert to Image Directory"),
    "image_list": ("images.lst", _image_directory, lambda root: ImageDirectory.load(root, input_name="x"),
                   "rebuild the folder with Convert to Image Directory"),
    "dataframe_schema": ("schema/_schema.json", _dataframe_directory,
                         lambda root: read_dataframe_schema(root, input_name="x"), "rerun the module that wrote it"),
}


@pytest.mark.parametrize("reader", list(READERS))
def test_every_port_reader_refuses_a_broken_file_in_the_one_wording(tmp_path, reader):
    name, make, read, fix = READERS[reader]
    root = tmp_path / "port"
    make(root)
    path = root / name
    if reader != "meta":
        read(root)  # the folder as written reads
    path.write_text("[1, {" if path.suffix in (".json", ".lst") else "a: [\n")
    with pytest.raises(UserError) as info:
        read(root)
    kind = "JSON" if path.suffix in (".json", ".lst") else "YAML"
    assert str(info.value).startswith(f"x: {path} {'line 1 ' if name == 'images.lst' else ''}is not valid {kind} (")
    assert str(info.value).endswith(f"; {fix}")


def test_a_dataframe_directory_without_a_schema_reads_as_having_no_roles(tmp_path):
    _dataframe_directory(tmp_path / "port")
    assert read_dataframe_schema(tmp_path / "port") == {"columnAttributes": [], "featureChannels": [],
                                                        "labelColumns": {}, "scoreColumns": {}}


def test_a_folder_without_meta_names_the_missing_file(tmp_path):
    with pytest.raises(UserError, match=rf"^x: .*_meta\.yaml does not exist; connect the output of a designer module"):
        read_meta(tmp_path, input_name="x")


def test_meta_without_a_type_is_refused(tmp_path):
    (tmp_path / "_meta.yaml").write_text(yaml.safe_dump({"kind": "ImageDirectory"}))
    with pytest.raises(UserError, match=r"has no 'type' field"):
        read_meta(tmp_path, input_name="x")


def test_yaml_aliases_are_refused_before_anything_expands_them(tmp_path):
    rungs = ["a0: &a0 [x, x]"] + [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}]" for i in range(1, 40)]
    (tmp_path / "bomb.yaml").write_text("\n".join(rungs) + "\n")  # 2**40 leaves once expanded
    assert _refused(tmp_path / "bomb.yaml", "YAML") == (f"x: {tmp_path / 'bomb.yaml'} uses a YAML alias "
                                                        f"(*name, line 2), which port files never need; {FIX}")
    (tmp_path / "loop.yaml").write_text("a: &a [*a]\n")  # a list holding itself
    assert " uses a YAML alias (*name, line 1)" in _refused(tmp_path / "loop.yaml", "YAML")


def test_our_yaml_writer_spells_a_repeated_value_out_so_it_reads_back(tmp_path):
    shared = [["Resize", [[8, 8]]]]
    write_meta(tmp_path, {"type": "ImageDirectory", "extension": {"a": shared, "b": shared}})
    assert "*" not in (tmp_path / "_meta.yaml").read_text()
    assert read_meta(tmp_path)["extension"] == {"a": shared, "b": shared}


@pytest.mark.parametrize("fmt", ["JSON", "YAML"])
def test_a_file_nested_thousands_deep_is_one_line_not_a_recursion_error(tmp_path, fmt):
    (tmp_path / "deep").write_text("[" * 100_000)
    assert _refused(tmp_path / "deep", fmt) == (f"x: {tmp_path / 'deep'} is nested too deeply to be a port file "
                                                f"(hundreds of levels); {FIX}")
