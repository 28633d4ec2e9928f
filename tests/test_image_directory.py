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
    assert [back.label_index(r) for r in back.rows] == [1, 0, 1]
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
    assert [d.label_index(r) for r in d.rows] == [1, 0]
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
