"""Convert to Image Directory from labelled data: AutoML for Images' JSON Lines, alone or named by an MLTable."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from designer_resnet.data.convert import convert_to_image_directory
from designer_resnet.directories.image_directory import ImageDirectory

from conftest import files_under, make_image, run_module

MODULE = "convert_to_image_directory"
FULL_URL = ("azureml://subscriptions/0000-sub/resourcegroups/my-rg/workspaces/my-ws/datastores/"
            "workspaceblobstore/paths/")
SHORT_URL = "azureml://datastores/workspaceblobstore/paths/"


def _images(folder: Path) -> list[Path]:
    """The image files of a class-folder layout, in the order Convert numbers them (class, then file name)."""
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _write_jsonl(path: Path, rows) -> Path:
    """One line per row: a dict as JSON, a string as it is."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def _rows(folder: Path, url) -> list[dict]:
    """AutoML rows for every image of a class-folder layout, `url(path)` giving each image_url."""
    return [{"image_url": url(p), "image_details": {"format": p.suffix[1:].lower(), "width": "20px", "height": "16px"},
             "label": p.parent.name} for p in _images(folder)]


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_same_directory(actual: Path, expected: Path) -> None:
    """Rows, categories, labels, sizes and every file (images, list, schema, samples, meta) byte for byte."""
    a, e = ImageDirectory.load(actual), ImageDirectory.load(expected)
    assert a.rows == e.rows and a.categories == e.categories
    assert [a.label(r) for r in a.rows] == [e.label(r) for r in e.rows]
    assert _tree(actual) == _tree(expected)


@pytest.fixture
def by_folder(labelled_folder, tmp_path) -> Path:
    """What Convert makes of the class-folder layout: the output every labelled input of the same images must equal."""
    out = tmp_path / "by_folder"
    convert_to_image_directory(labelled_folder, out)
    return out


@pytest.fixture
def datastore(labelled_folder, tmp_path) -> Path:
    """A mounted datastore holding the images under pets/<class>/."""
    root = tmp_path / "datastore"
    shutil.copytree(labelled_folder, root / "pets")
    return root


# ---- what is accepted ----------------------------------------------------------------------------------------------


def test_relative_paths_in_a_folder_with_its_images_equal_the_class_folder_conversion(labelled_folder, by_folder,
                                                                                         tmp_path):
    data = tmp_path / "export"
    shutil.copytree(labelled_folder, data)
    _write_jsonl(data / "annotations.jsonl", _rows(labelled_folder, lambda p: p.relative_to(labelled_folder).as_posix()))
    result = run_module(MODULE, "--input_path", data, "--output_path", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "wrote 12 images (labelled, 3 classes)" in result.stdout and "skipped 0 file(s)" in result.stdout
    assert result.stderr == ""  # the declared sizes are the files' own: no warning
    _assert_same_directory(tmp_path / "out", by_folder)


def test_the_jsonl_file_itself_and_absolute_paths(labelled_folder, by_folder, tmp_path):
    listing = _write_jsonl(tmp_path / "lists" / "train.jsonl", _rows(labelled_folder, lambda p: str(p.resolve())))
    for given in (listing, listing.parent):
        out = tmp_path / f"out_{given.name}"
        report = convert_to_image_directory(given, out)
        assert report.written == 12 and report.labelled and report.categories == ["cat", "dog", "fish"]
        _assert_same_directory(out, by_folder)


@pytest.mark.parametrize("prefix", [FULL_URL, SHORT_URL])
def test_azureml_urls_read_from_the_datastore_folder(labelled_folder, by_folder, datastore, tmp_path, prefix):
    listing = _write_jsonl(tmp_path / "export" / "labels.jsonl",
                           _rows(labelled_folder, lambda p: prefix + "pets/" + p.relative_to(labelled_folder).as_posix()))
    result = run_module(MODULE, "--input_path", listing.parent, "--datastore_path", datastore,
                        "--output_path", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    _assert_same_directory(tmp_path / "out", by_folder)


MLTABLE = """\
$schema: https://azuremlschemas.azureedge.net/latest/MLTable.schema.json
type: mltable
paths:
  - {entry}
transformations:
  - read_json_lines:
      encoding: utf8
      invalid_lines: error
      include_path_column: false
  - convert_column_types:
      - columns: image_url
        column_type: stream_info
"""


@pytest.mark.parametrize("entry", ["file: ./annotations/labels.jsonl", "folder: ./annotations",
                                   "pattern: annotations/*.jsonl", f"file: {SHORT_URL}exports/labels.jsonl"])
def test_an_mltable_folder_naming_the_jsonl(labelled_folder, by_folder, datastore, tmp_path, entry):
    rows = _rows(labelled_folder, lambda p: FULL_URL + "pets/" + p.relative_to(labelled_folder).as_posix())
    table = tmp_path / "mltable"
    _write_jsonl(table / "annotations" / "labels.jsonl", rows)
    _write_jsonl(datastore / "exports" / "labels.jsonl", rows)  # where a Data Labeling export's MLTable points
    (table / "MLTable").write_text(MLTABLE.format(entry=entry), encoding="utf-8")
    result = run_module(MODULE, "--input_path", table, "--datastore_path", datastore, "--output_path", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    _assert_same_directory(tmp_path / "out", by_folder)


def test_a_wrapping_folder_is_looked_through(labelled_folder, by_folder, tmp_path):
    table = tmp_path / "upload" / "labels"
    shutil.copytree(labelled_folder, table / "images")
    _write_jsonl(table / "labels.jsonl", _rows(labelled_folder, lambda p: "images/" + p.relative_to(labelled_folder).as_posix()))
    (table / "MLTable").write_text("paths:\n  - file: ./labels.jsonl\n")
    convert_to_image_directory(tmp_path / "upload", tmp_path / "out")
    _assert_same_directory(tmp_path / "out", by_folder)


def test_rows_keep_the_jsonl_order_and_categories_are_sorted(labelled_folder, tmp_path):
    images = list(reversed(_images(labelled_folder)))  # fish first
    _write_jsonl(tmp_path / "lists" / "a.jsonl",
                 [{"image_url": str(p), "label": p.parent.name} for p in images] + [""])  # a blank line is no row
    convert_to_image_directory(tmp_path / "lists", tmp_path / "out")
    d = ImageDirectory.load(tmp_path / "out")
    assert d.categories == ["cat", "dog", "fish"]
    assert [r["id"] for r in d.rows] == list(range(12))
    assert [d.label(r) for r in d.rows] == [p.parent.name for p in images]
    assert [d.image_path(r).read_bytes() for r in d.rows] == [p.read_bytes() for p in images]
    assert d.relative_path(d.rows[0]) == "image/2_0.jpg"  # <category index>_<row id>, as the built-in names files


def test_image_details_that_differ_from_the_file_are_warned_and_the_file_size_is_written(labelled_folder, tmp_path):
    rows = _rows(labelled_folder, lambda p: str(p))
    rows[0]["image_details"] = {"width": 400, "height": "600px"}
    rows[1]["image_details"] = {"width": "wide"}  # not a size: nothing to check
    _write_jsonl(tmp_path / "lists" / "a.jsonl", rows)
    result = run_module(MODULE, "--input_path", tmp_path / "lists", "--output_path", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("WARNING") == 1
    assert "1 row(s) give an image_details width/height other than the file's" in result.stderr
    assert "a.jsonl line 1): 400x600 listed, 20x16 read" in result.stderr
    info = ImageDirectory.load(tmp_path / "out").rows[0]["image_info"]
    assert (info["width"], info["height"]) == (20, 16)


def test_unreadable_and_non_image_files_are_skipped_with_a_warning_as_in_a_folder(labelled_folder, tmp_path):
    data = tmp_path / "export"
    shutil.copytree(labelled_folder, data)
    (data / "dog" / "broken.png").write_bytes(b"this is not a png at all" * 10)
    (data / "dog" / "notes.txt").write_text("not an image")
    rows = _rows(labelled_folder, lambda p: p.relative_to(labelled_folder).as_posix())
    rows[4:4] = [{"image_url": "dog/broken.png", "label": "dog"}, {"image_url": "dog/notes.txt", "label": "dog"}]
    _write_jsonl(data / "a.jsonl", rows)
    result = run_module(MODULE, "--input_path", data, "--output_path", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "wrote 12 images (labelled, 3 classes)" in result.stdout and "skipped 2 file(s)" in result.stdout
    assert "skipped file dog/notes.txt (a.jsonl line 6): not an image file type" in result.stderr
    assert "skipped file dog/broken.png (a.jsonl line 5): not a readable image" in result.stderr
    # the same folder read by class gives the same rows (broken.png sorts first among the dogs): the unreadable
    # file takes a row id, the text file none
    (data / "a.jsonl").unlink()
    convert_to_image_directory(data, tmp_path / "by_folder")
    _assert_same_directory(tmp_path / "out", tmp_path / "by_folder")


def test_another_tools_jsonl_beside_images_leaves_the_folder_read_as_before(labelled_folder, by_folder, tmp_path):
    data = tmp_path / "photos"
    shutil.copytree(labelled_folder, data)
    _write_jsonl(data / "metadata.jsonl", [{"file_name": "cat/cat0.png", "caption": "a cat"}])
    report = convert_to_image_directory(data, tmp_path / "out")
    assert report.skipped == [("metadata.jsonl", "not an image file type")]
    _assert_same_directory(tmp_path / "out", by_folder)


def test_a_datastore_for_a_folder_of_images_is_ignored_with_a_warning(labelled_folder, by_folder, datastore, tmp_path):
    result = run_module(MODULE, "--input_path", labelled_folder, "--datastore_path", datastore,
                        "--output_path", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "datastore_path: ignored" in result.stderr
    _assert_same_directory(tmp_path / "out", by_folder)


# ---- what is refused: one line, exit code 1, no output -------------------------------------------------------------


def _refused(result, *phrases: str) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for phrase in phrases:
        assert phrase in lines[0], (phrase, lines[0])
    return lines[0]


@pytest.fixture
def image_set(tmp_path) -> Path:
    """A folder with two images, for listings to name."""
    folder = tmp_path / "data"
    make_image(folder / "img" / "a.png")
    make_image(folder / "img" / "b.png")
    return folder


GOOD = {"image_url": "img/a.png", "label": "cat"}
BAD_ROWS = [
    ("missing_file", {"image_url": "img/gone.png", "label": "cat"}, ["line 2:", "'img/gone.png'", "does not exist",
                                                                      "fix the path, or add the file"]),
    ("no_label", {"image_url": "img/b.png"}, ["line 2 has no label", "give every row its class"]),
    ("empty_label", {"image_url": "img/b.png", "label": ""}, ["line 2 has no label"]),
    ("number_label", {"image_url": "img/b.png", "label": 3}, ["line 2: label 3 is not a string"]),
    ("multi_label", {"image_url": "img/b.png", "label": ["cat", "dog"]},
     ["line 2 has a list label", "multi-label", "give each image one class"]),
    ("not_json", '{"image_url": "img/b.png", "label": ', ["line 2 is not valid JSON", "one JSON object per line"]),
    ("not_object", '["img/b.png", "cat"]', ["line 2 is not a JSON object (it holds a list)"]),
    ("url_not_string", {"image_url": 7, "label": "cat"}, ["line 2 has no image_url string (found int '7')"]),
    ("no_url", {"label": "cat"}, ["line 2 has no image_url string (found none)"]),
    ("dot_dot", {"image_url": "../outside.png", "label": "cat"}, ["line 2: image_url", "leaves its folder"]),
    ("https", {"image_url": "https://example.com/a.png", "label": "cat"}, ["line 2:", "is a URL Convert cannot read (https:)"]),
    ("azureml_without_datastore", {"image_url": SHORT_URL + "img/a.png", "label": "cat"},
     ["line 2:", "is in datastore 'workspaceblobstore', but no datastore_path is given", "connect that datastore"]),
]


@pytest.mark.parametrize("name,row,phrases", BAD_ROWS, ids=[b[0] for b in BAD_ROWS])
def test_a_bad_row_is_one_line_naming_its_line_and_nothing_is_written(image_set, tmp_path, name, row, phrases):
    make_image(tmp_path / "outside.png")
    listing = _write_jsonl(image_set / "labels.jsonl", [GOOD, row])
    out = tmp_path / "out"
    result = run_module(MODULE, "--input_path", image_set, "--output_path", out)
    line = _refused(result, f"error: input_path: {listing}", *phrases)
    assert "Traceback" not in line and not out.exists()


def test_an_empty_jsonl_is_refused(image_set, tmp_path):
    listing = image_set / "labels.jsonl"
    listing.write_text("\n  \n")
    result = run_module(MODULE, "--input_path", image_set, "--output_path", tmp_path / "out")
    _refused(result, f"input_path: {listing} holds no rows", "give one JSON object per image")
    assert not (tmp_path / "out").exists()


def test_links_out_of_the_folder_and_the_datastore_are_refused(image_set, datastore, tmp_path):
    secret = make_image(tmp_path / "elsewhere" / "secret.png")
    os.symlink(secret, image_set / "img" / "link.png")
    os.symlink(secret.parent, datastore / "pets" / "linked_dir")
    cases = [
        ([{"image_url": "img/link.png", "label": "cat"}], [], ["'img/link.png' links outside", "copy the file"]),
        ([{"image_url": SHORT_URL + "pets/linked_dir/secret.png", "label": "cat"}], ["--datastore_path", datastore],
         ["links outside datastore_path"]),
        ([{"image_url": SHORT_URL + "pets/../../elsewhere/secret.png", "label": "cat"}], ["--datastore_path", datastore],
         ["leaves its folder"]),
        ([{"image_url": SHORT_URL + "pets/cat/cat0.png", "label": "cat"},
          {"image_url": "azureml://datastores/other/paths/pets/cat/cat1.JPG", "label": "cat"}],
         ["--datastore_path", datastore], ["line 2:", "is in datastore 'other', but earlier rows are in"]),
        ([{"image_url": "/dev/null", "label": "cat"}], [], ["'/dev/null' names /dev/null, which is not a file"]),
    ]
    for number, (rows, extra, phrases) in enumerate(cases):
        _write_jsonl(image_set / "labels.jsonl", rows)
        out = tmp_path / f"out{number}"
        result = run_module(MODULE, "--input_path", image_set, *extra, "--output_path", out)
        _refused(result, *phrases)
        assert not out.exists()


BAD_TABLES = [
    ("csv", "paths:\n  - file: ./labels.csv\ntransformations:\n  - read_delimited:\n      delimiter: ','\n",
     ["reads its files with read_delimited, not read_json_lines"]),
    ("no_jsonl", "paths:\n  - file: ./labels.csv\n", ["its paths name labels.csv, not a JSON Lines (.jsonl) file"]),
    ("two_files", "paths:\n  - pattern: '*.jsonl'\n", ["its paths name 2 files (a.jsonl, b.jsonl)"]),
    ("no_paths", "type: mltable\n", ["has no paths list"]),
    ("missing", "paths:\n  - file: ./gone.jsonl\n", ["paths[1]: file './gone.jsonl'", "does not exist"]),
    ("escape", "paths:\n  - file: ../labels.jsonl\n", ["paths[1]: file", "leaves its folder"]),
    ("take", "paths:\n  - file: ./a.jsonl\ntransformations:\n  - read_json_lines: {}\n  - take: 5\n",
     ["transformation 'take' is not supported"]),
    ("not_yaml", "paths: [file: a.jsonl\n", ["is not valid YAML"]),
]


@pytest.mark.parametrize("name,text,phrases", BAD_TABLES, ids=[b[0] for b in BAD_TABLES])
def test_an_mltable_that_does_not_name_one_jsonl_is_refused(tmp_path, name, text, phrases):
    table = tmp_path / "table"
    make_image(table / "a.png")
    for listing in ("a.jsonl", "b.jsonl"):
        _write_jsonl(table / listing, [{"image_url": "a.png", "label": "x"}])
    (table / "labels.csv").write_text("image_url,label\na.png,x\n")
    (table / "MLTable").write_text(text)
    result = run_module(MODULE, "--input_path", table, "--output_path", tmp_path / "out")
    _refused(result, f"input_path: {table / 'MLTable'}", *phrases)
    assert not (tmp_path / "out").exists()


def test_two_jsonl_files_without_an_mltable_are_refused(image_set, tmp_path):
    _write_jsonl(image_set / "train.jsonl", [GOOD])
    _write_jsonl(image_set / "valid.jsonl", [GOOD])
    result = run_module(MODULE, "--input_path", image_set, "--output_path", tmp_path / "out")
    _refused(result, "holds 2 JSON Lines files (train.jsonl, valid.jsonl)", "add an MLTable file naming it")
    assert files_under(tmp_path / "data") == {"img", "img/a.png", "img/b.png", "train.jsonl", "valid.jsonl"}
    assert not (tmp_path / "out").exists()
