"""ImageDirectory and the other port formats: what we write, the built-ins read, and back."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml

from designer_resnet.directories.dataframe_directory import read_dataframe_directory, write_dataframe_directory
from designer_resnet.directories.image_directory import ImageDirectory, ImageDirectoryWriter
from designer_resnet.directories.meta import read_meta, write_meta
from designer_resnet.directories.staging import StagedOutput
from designer_resnet.errors import UserError

from conftest import make_image


def _write(root, rows, categories):
    writer = ImageDirectoryWriter(root, categories)
    with writer:
        for row_id, category in rows:
            name = writer.target_name(row_id, category, ".png")
            make_image(root / name, color=(row_id * 10 % 255, 0, 0))
            writer.add(name, row_id, category)
    return writer


def test_labelled_round_trip(tmp_path):
    rows = [(0, "dog"), (1, "cat"), (5, "dog")]
    _write(tmp_path, rows, ["cat", "dog"])
    meta = yaml.safe_load((tmp_path / "_meta.yaml").read_text())
    assert meta == {"type": "ImageDirectory", "image_list": "images.lst", "schema": "_schema.json",
                    "samples": "_samples.json", "extension": {}}
    lines = [json.loads(x) for x in (tmp_path / "images.lst").read_text().splitlines()]
    assert lines[2] == {"image_info": {"file_name": "image/1_5.png"}, "id": 5, "category": "dog"}
    schema = json.loads((tmp_path / "_schema.json").read_text())
    label_col = [c for c in schema["columnAttributes"] if c["name"] == "category"][0]
    assert label_col["properties"] == {"annotation_type": "COCO_classification",
                                       "categories": [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}]}
    image_col = schema["columnAttributes"][0]
    assert image_col["elementType"]["typeName"] == "bytes" and image_col["properties"]["mime_type"] == "image/png"
    samples = json.loads((tmp_path / "_samples.json").read_text())
    assert len(samples) == 3 and samples[0]["id"] == 0 and len(samples[0]["image"]) > 20

    back = ImageDirectory.load(tmp_path)
    assert back.labelled and back.categories == ["cat", "dog"]
    assert [(r["id"], back.label(r)) for r in back.rows] == rows
    assert [back.categories.index(back.label(r)) for r in back.rows] == [1, 0, 1]
    assert back.open_image(back.rows[2]).getpixel((1, 1)) == (50, 0, 0)


def test_unlabelled_round_trip(tmp_path):
    _write(tmp_path, [(3, None), (4, None)], None)
    schema = json.loads((tmp_path / "_schema.json").read_text())
    assert [c["name"] for c in schema["columnAttributes"]] == ["image", "id"]
    back = ImageDirectory.load(tmp_path)
    assert not back.labelled and back.categories is None
    assert [r["id"] for r in back.rows] == [3, 4]
    assert all("category" not in r for r in back.rows)


def test_reads_builtin_layout_with_extra_keys(tmp_path):
    """Rows as the built-in converter writes them, plus coco_url/width keys and a custom image_ref."""
    make_image(tmp_path / "pics" / "a.jpg", fmt="JPEG")
    make_image(tmp_path / "pics" / "b.jpg", fmt="JPEG")
    write_meta(tmp_path, {"type": "ImageDirectory", "image_list": "images.lst", "schema": "_schema.json",
                          "extension": {"built_in": True}})
    rows = [
        {"img": {"file_name": "pics/a.jpg", "width": 20, "height": 16, "coco_url": "", "id": 7}, "category": "b", "id": 7,
         "extra": [1, 2]},
        {"img": {"file_name": "pics/b.jpg"}, "category": "a", "id": 8},
    ]
    (tmp_path / "images.lst").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    schema = {"columnAttributes": [
        {"name": "image", "type": "Bytes", "isFeature": True, "elementType": {"typeName": "bytes", "isNullable": False},
         "properties": {"mime_type": "image/png", "image_ref": "img"}},
        {"name": "id", "type": "Numeric", "isFeature": False, "elementType": {"typeName": "int64", "isNullable": False}},
        {"name": "category", "type": "String", "isFeature": False, "elementType": {"typeName": "str", "isNullable": False},
         "properties": {"annotation_type": "COCO_classification",
                        "categories": [{"id": 1, "name": "b"}, {"id": 0, "name": "a"}]}},
    ]}
    (tmp_path / "_schema.json").write_text(json.dumps(schema))
    d = ImageDirectory.load(tmp_path)
    assert d.image_ref == "img" and d.categories == ["a", "b"]
    assert [d.categories.index(d.label(r)) for r in d.rows] == [1, 0]
    assert d.rows[0]["extra"] == [1, 2]
    assert d.open_image(d.rows[1]).size == (20, 16)
    assert d.extension == {"built_in": True}


def test_wrong_port_type_names_both_types(tmp_path):
    write_meta(tmp_path, {"type": "ModelDirectory", "model": "model_spec.yaml"})
    with pytest.raises(UserError, match=r"training_data: expected ImageDirectory but .* is a ModelDirectory"):
        ImageDirectory.load(tmp_path, input_name="training_data")


def test_untrained_model_port_maps_to_model_directory_on_disk(tmp_path):
    write_meta(tmp_path, {"type": "ModelDirectory"})
    assert read_meta(tmp_path, "UntrainedModelDirectory")["type"] == "ModelDirectory"


def test_row_path_leaving_the_folder_is_refused(tmp_path):
    _write(tmp_path, [(0, None)], None)
    (tmp_path / "images.lst").write_text(json.dumps({"image_info": {"file_name": "../../etc/passwd"}, "id": 0}) + "\n")
    d = ImageDirectory.load(tmp_path)
    with pytest.raises(UserError, match="leaves its folder"):
        d.image_path(d.rows[0])


def test_folder_without_meta_is_read_as_imagefolder(labelled_folder):
    d = ImageDirectory.load(labelled_folder)
    assert d.categories == ["cat", "dog", "fish"]
    assert len(d) == 12
    assert {d.label(r) for r in d.rows} == {"cat", "dog", "fish"}
    assert all(d.image_path(r).exists() for r in d.rows)


def test_folder_without_meta_and_loose_images_is_unlabelled(flat_folder):
    d = ImageDirectory.load(flat_folder)
    assert not d.labelled and len(d) == 6


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match="no image files found"):
        ImageDirectory.load(tmp_path, input_name="x")


def test_dataframe_directory_round_trip(tmp_path):
    df = pd.DataFrame({"id": [1, 2], "Scored Labels": ["a", "b"], "Scored Probabilities_a": [0.9, 0.2]})
    write_dataframe_directory(tmp_path, df)
    meta = yaml.safe_load((tmp_path / "_meta.yaml").read_text())
    assert meta["type"] == "DataFrameDirectory" and meta["format"] == "Parquet" and meta["data"] == "_data.parquet"
    schema = json.loads((tmp_path / "schema" / "_schema.json").read_text())
    assert [c["name"] for c in schema["columnAttributes"]] == list(df.columns)
    pd.testing.assert_frame_equal(read_dataframe_directory(tmp_path), df)


def test_staged_output_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with StagedOutput(out) as stage:
            (stage.path / "half.txt").write_text("x")
            raise RuntimeError("boom")
    assert not out.exists()


def test_staged_output_refuses_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        with StagedOutput(tmp_path):
            pass
    assert (tmp_path / "keep.txt").read_text() == "mine"


# --- rows, paths and scans that a user's data folder can get wrong ---------------------------------


def _rewrite_rows(root, rows):
    (root / "images.lst").write_text("".join(json.dumps(r) + "\n" for r in rows))


def _labelled_dir(root, n=3):
    _write(root, [(i, "cat" if i % 2 else "dog") for i in range(n)], ["cat", "dog"])
    return [json.loads(x) for x in (root / "images.lst").read_text().splitlines()]


_DELETED = object()


def _load_with_row_edited(root, index: int, key: str, value):
    """Load _labelled_dir's 3 rows after setting row `index`'s `key` to `value` (_DELETED: the key removed)."""
    rows = _labelled_dir(root)
    if value is _DELETED:
        del rows[index][key]
    else:
        rows[index][key] = value
    _rewrite_rows(root, rows)
    return ImageDirectory.load(root, input_name="x")


def test_duplicate_row_ids_are_refused_naming_the_id(tmp_path):
    rows = _labelled_dir(tmp_path, 4)
    rows[3]["id"] = rows[1]["id"]
    _rewrite_rows(tmp_path, rows)
    with pytest.raises(UserError, match=r"^training_data: images\.lst lines 2 and 4 share id 1; ") as info:
        ImageDirectory.load(tmp_path, input_name="training_data")
    assert "\n" not in str(info.value)


def test_convert_of_a_set_with_duplicate_ids_fails_with_one_line(tmp_path):
    from conftest import run_module

    rows = _labelled_dir(tmp_path / "set", 3)
    rows[2]["id"] = 0
    _rewrite_rows(tmp_path / "set", rows)
    result = run_module("convert_to_image_directory", "--input_path", tmp_path / "set", "--output_path", tmp_path / "out")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "error: input_path: images.lst lines 1 and 3 share id 0" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", [_DELETED, "7", 1.5, True, [1]], ids=["missing", "string", "fraction", "bool", "list"])
def test_row_without_an_integer_id_is_refused_naming_the_line(tmp_path, bad):
    with pytest.raises(UserError, match=r"^x: images\.lst line 2 has no integer 'id'"):
        _load_with_row_edited(tmp_path, 1, "id", bad)


def test_integral_float_id_is_read_as_an_integer(tmp_path):
    d = _load_with_row_edited(tmp_path, 1, "id", 1.0)
    assert [r["id"] for r in d.rows] == [0, 1, 2] and type(d.rows[1]["id"]) is int


@pytest.mark.parametrize("bad", [_DELETED, None, ""], ids=["missing", "None", "empty"])
def test_labelled_row_without_category_is_refused_naming_the_line(tmp_path, bad):
    with pytest.raises(UserError, match=r"^x: images\.lst line 3 \(id 2\) has no 'category'"):
        _load_with_row_edited(tmp_path, 2, "category", bad)


def test_row_without_image_file_name_is_refused_at_load(tmp_path):
    with pytest.raises(UserError, match=r"^x: images\.lst line 2 \(id 1\) has no image_info\.file_name"):
        _load_with_row_edited(tmp_path, 1, "image_info", "image/0_1.png")


def test_non_numeric_width_height_are_dropped_at_load(tmp_path):
    from designer_resnet.training.dataset import image_sizes

    rows = _labelled_dir(tmp_path, 4)
    rows[0]["image_info"].update(width="wide", height=16)
    rows[1]["image_info"].update(width=None, height=[1])
    rows[2]["image_info"].update(width=-20, height=0)
    rows[3]["image_info"].update(width="20", height=16.0)  # numbers as text or float: normalised
    _rewrite_rows(tmp_path, rows)
    d = ImageDirectory.load(tmp_path)
    for row in d.rows[:3]:
        assert "width" not in row["image_info"] and "height" not in row["image_info"]
        assert row["image_info"]["file_name"].startswith("image/")
    assert d.rows[3]["image_info"]["width"] == 20 and d.rows[3]["image_info"]["height"] == 16
    assert image_sizes(d) == {(20, 16)}  # read from the headers where the rows had no usable size


def test_symlink_leaving_an_image_directory_is_refused(tmp_path):
    outside = make_image(tmp_path / "secret" / "s.png")
    root = tmp_path / "set"
    _labelled_dir(root)
    link = root / "image" / "0_1.png"
    link.unlink()
    link.symlink_to(outside)
    d = ImageDirectory.load(root, input_name="x")
    with pytest.raises(UserError, match=r"^x: row id 1: image/0_1\.png links outside"):
        d.image_path(d.rows[1])
    with pytest.raises(UserError, match="links outside"):
        d.open_image(d.rows[1])


def test_symlinked_image_folder_leaving_the_directory_is_refused(tmp_path):
    root = tmp_path / "set"
    _labelled_dir(root)
    (root / "image").rename(tmp_path / "elsewhere")
    (root / "image").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    d = ImageDirectory.load(root, input_name="x")
    with pytest.raises(UserError, match="links outside"):
        d.image_path(d.rows[0])


def test_symlink_inside_the_directory_is_followed(tmp_path):
    root = tmp_path / "set"
    _labelled_dir(root)
    (root / "image" / "0_1.png").unlink()
    (root / "image" / "0_1.png").symlink_to(root / "image" / "1_0.png")
    d = ImageDirectory.load(root)
    assert d.open_image(d.rows[1]).size == (20, 16)


def test_links_in_a_plain_folder_are_followed(tmp_path):
    """The user's own layout (no _meta.yaml), e.g. class folders of links to a photo store, still reads."""
    from designer_resnet.data.convert import convert_to_image_directory

    store = tmp_path / "store"
    for i in range(4):
        make_image(store / f"p{i}.png", color=(i * 40, 0, 0))
    plain = tmp_path / "plain"
    for i, cls in enumerate(["a", "a", "b", "b"]):
        (plain / cls).mkdir(parents=True, exist_ok=True)
        (plain / cls / f"{i}.png").symlink_to(store / f"p{i}.png")
    d = ImageDirectory.load(plain)
    assert d.categories == ["a", "b"] and all(d.open_image(r).size == (20, 16) for r in d.rows)
    report = convert_to_image_directory(plain, tmp_path / "out")
    assert report.written == 4 and report.categories == ["a", "b"]
    assert not any(p.is_symlink() for p in (tmp_path / "out").rglob("*"))


def _update_meta(root, fields: dict) -> None:
    meta = yaml.safe_load((root / "_meta.yaml").read_text())
    write_meta(root, {**meta, **fields})


@pytest.mark.parametrize("key", ["image_list", "schema"])
@pytest.mark.parametrize("where", ["../outside.json", "/etc/passwd", "sub/../../outside.json"])
def test_meta_naming_a_file_outside_an_image_directory_is_refused(tmp_path, key, where):
    root = tmp_path / "set"
    _labelled_dir(root)
    _update_meta(root, {key: where})
    with pytest.raises(UserError, match=rf"^x: _meta\.yaml {key}: path .* leaves its folder"):
        ImageDirectory.load(root, input_name="x")


def test_meta_naming_a_link_outside_an_image_directory_is_refused(tmp_path):
    root = tmp_path / "set"
    _labelled_dir(root)
    (tmp_path / "other.lst").write_text((root / "images.lst").read_text())
    (root / "list.lst").symlink_to(tmp_path / "other.lst")
    _update_meta(root, {"image_list": "list.lst"})
    with pytest.raises(UserError, match=r"^x: _meta\.yaml image_list: list\.lst links outside"):
        ImageDirectory.load(root, input_name="x")


def test_meta_file_linking_outside_is_refused(tmp_path):
    root = tmp_path / "set"
    _labelled_dir(root)
    (root / "_meta.yaml").rename(tmp_path / "meta.yaml")
    (root / "_meta.yaml").symlink_to(tmp_path / "meta.yaml")
    with pytest.raises(UserError, match=r"^x: _meta\.yaml links outside"):
        ImageDirectory.load(root, input_name="x")


@pytest.mark.parametrize("key", ["data", "schema"])
@pytest.mark.parametrize("where", ["../_data.parquet", "/etc/passwd"])
def test_meta_naming_a_file_outside_a_dataframe_directory_is_refused(tmp_path, key, where):
    from designer_resnet.directories.dataframe_directory import read_dataframe_schema

    root = tmp_path / "table"
    write_dataframe_directory(root, pd.DataFrame({"id": [1, 2]}))
    write_dataframe_directory(tmp_path, pd.DataFrame({"id": [3]}))  # a readable table just outside
    _update_meta(root, {key: where})
    reader = read_dataframe_directory if key == "data" else read_dataframe_schema
    with pytest.raises(UserError, match=rf"^scored: _meta\.yaml {key}: path .* leaves its folder"):
        reader(root, input_name="scored")


def test_folder_with_one_class_folder_is_labelled(tmp_path):
    for i in range(3):
        make_image(tmp_path / "only" / f"{i}.png")
    d = ImageDirectory.load(tmp_path)
    assert d.labelled and d.categories == ["only"] and len(d) == 3


def test_convert_of_one_class_folder_says_so_in_one_line(tmp_path, caplog):
    from designer_resnet.data.convert import convert_to_image_directory

    for i in range(3):
        make_image(tmp_path / "in" / "cat" / f"{i}.png")
    with caplog.at_level("WARNING"):
        report = convert_to_image_directory(tmp_path / "in", tmp_path / "out")
    assert not report.labelled
    lines = [r.getMessage() for r in caplog.records if "'cat'" in r.getMessage()]
    assert len(lines) == 1 and "unlabelled" in lines[0] and "\n" not in lines[0]


def test_many_classes_without_a_readable_image_give_one_warning_line(tmp_path, caplog):
    from designer_resnet.data.convert import convert_to_image_directory

    for cls in ("a", "b"):
        for i in range(2):
            make_image(tmp_path / "in" / cls / f"{i}.png")
    for c in range(30):
        (tmp_path / "in" / f"z{c:02d}").mkdir()
        (tmp_path / "in" / f"z{c:02d}" / "broken.png").write_bytes(b"not a png")
    with caplog.at_level("WARNING"):
        report = convert_to_image_directory(tmp_path / "in", tmp_path / "out", workers=1)
    assert report.written == 4 and len(report.categories) == 32
    lines = [r.getMessage() for r in caplog.records if "no readable image" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("30 class(es) have no readable image")
    assert "'z00'" in lines[0] and "'z29'" not in lines[0]


def test_scan_skips_hidden_folders(tmp_path):
    write_labelled = tmp_path / "in"
    for cls in ("cat", "dog"):
        make_image(write_labelled / cls / "0.png")
    _labelled_dir(write_labelled / ".designer-resnet-staging-abc123", 2)  # a killed run's leftover
    make_image(write_labelled / "cat" / ".cache" / "thumb.png")
    d = ImageDirectory.load(write_labelled)
    assert d.categories == ["cat", "dog"] and len(d) == 2


def test_scan_of_loose_images_skips_hidden_folders(tmp_path):
    make_image(tmp_path / "a.png")
    make_image(tmp_path / ".designer-resnet-staging-x" / "image" / "0_0.png")
    d = ImageDirectory.load(tmp_path)
    assert not d.labelled and [d.relative_path(r) for r in d.rows] == ["a.png"]


def test_convert_refuses_an_image_directory_linking_outside(tmp_path):
    from conftest import run_module

    outside = make_image(tmp_path / "secret" / "s.png")
    root = tmp_path / "set"
    _labelled_dir(root)
    (root / "image" / "0_1.png").unlink()
    (root / "image" / "0_1.png").symlink_to(outside)
    result = run_module("convert_to_image_directory", "--input_path", root, "--output_path", tmp_path / "out")
    assert result.returncode == 1, result.stdout + result.stderr
    errors = [x for x in result.stderr.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and "input_path: row id 1: image/0_1.png links outside" in errors[0]
    assert not (tmp_path / "out").exists()
