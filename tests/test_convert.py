"""Convert to Image Directory: folders, archives, bad files and unsafe archives."""

from __future__ import annotations

import io
import shutil
import tarfile
import zipfile

import pytest

from designer_resnet.data.convert import convert_to_image_directory
from designer_resnet.directories.image_directory import ImageDirectory
from designer_resnet.errors import UserError

from conftest import files_under, make_image, run_module


def test_labelled_folder_becomes_labelled_directory(labelled_folder, tmp_path):
    out = tmp_path / "out"
    report = convert_to_image_directory(labelled_folder, out)
    assert report.written == 12 and report.skipped == []
    d = ImageDirectory.load(out)
    assert d.categories == ["cat", "dog", "fish"]
    # Designer naming: image/<category index>_<row id><suffix>, suffix lower-cased.
    names = [d.relative_path(r) for r in d.rows]
    assert names[0] == "image/0_0.png" and names[1] == "image/0_1.jpg"
    assert all(n.startswith(f"image/{d.categories.index(d.label(r))}_{r['id']}.") for n, r in zip(names, d.rows))
    assert [d.label(r) for r in d.rows] == ["cat"] * 4 + ["dog"] * 4 + ["fish"] * 4
    assert d.rows[0]["image_info"]["width"] == 20 and d.rows[0]["image_info"]["height"] == 16
    assert d.open_image(d.rows[5]).getpixel((3, 3))[1] > 150  # a green dog
    assert not [p for p in out.iterdir() if p.name.startswith(".designer-resnet")]


def test_flat_folder_becomes_unlabelled_directory(flat_folder, tmp_path):
    report = convert_to_image_directory(flat_folder, tmp_path / "out")
    d = ImageDirectory.load(tmp_path / "out")
    assert report.written == 6 and not d.labelled and not report.labelled


def _zip_folder(folder, zip_path, prefix):
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, f"{prefix}/{p.relative_to(folder).as_posix()}")
        zf.writestr("__MACOSX/._junk", b"\x00\x05\x16\x07")
        zf.writestr(f"__MACOSX/{prefix}/cat/._cat0.png", b"\x00\x05\x16\x07")


def test_zip_with_wrapping_folder_and_macosx(labelled_folder, tmp_path):
    archive = tmp_path / "pets.zip"
    _zip_folder(labelled_folder, archive, "pets")
    report = convert_to_image_directory(archive, tmp_path / "out")
    assert report.written == 12 and report.skipped == []
    assert ImageDirectory.load(tmp_path / "out").categories == ["cat", "dog", "fish"]
    assert not (tmp_path / "out" / "__MACOSX").exists()


def test_tar_gz_with_wrapping_folders_inside_a_folder(labelled_folder, tmp_path):
    holder = tmp_path / "mounted"
    holder.mkdir()
    with tarfile.open(holder / "pets.tar.gz", "w:gz") as tf:
        tf.add(labelled_folder, arcname="outer/inner")
        info = tarfile.TarInfo("__MACOSX/._x")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"\x00\x05\x16\x07"))
    report = convert_to_image_directory(holder, tmp_path / "out")
    assert report.written == 12
    assert ImageDirectory.load(tmp_path / "out").categories == ["cat", "dog", "fish"]


def test_bad_files_are_skipped_and_counted(labelled_folder, tmp_path):
    full = (labelled_folder / "cat" / "cat1.JPG").read_bytes()
    (labelled_folder / "cat" / "truncated.jpg").write_bytes(full[: len(full) // 2])
    (labelled_folder / "dog" / "empty.png").write_bytes(b"")
    (labelled_folder / "dog" / "garbage.png").write_bytes(b"this is not a png at all" * 10)
    (labelled_folder / "fish" / "notes.txt").write_text("not an image")
    (labelled_folder / "fish" / ".DS_Store").write_bytes(b"\x00")
    report = convert_to_image_directory(labelled_folder, tmp_path / "out")
    skipped = dict(report.skipped)
    assert report.written == 12
    assert set(skipped) == {"cat/truncated.jpg", "dog/empty.png", "dog/garbage.png", "fish/notes.txt"}
    assert skipped["dog/empty.png"] == "empty file"
    assert len(ImageDirectory.load(tmp_path / "out")) == 12


def test_cli_reports_skip_count(labelled_folder, tmp_path):
    (labelled_folder / "dog" / "empty.png").write_bytes(b"")
    result = run_module("convert_to_image_directory", "--input_path", labelled_folder, "--output_path", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "wrote 12 images (labelled, 3 classes)" in result.stdout and "skipped 1 file(s)" in result.stdout
    assert "skipped file dog/empty.png: empty file" in result.stderr


def test_no_valid_image_is_an_error_and_writes_nothing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.png").write_bytes(b"")
    (src / "b.jpg").write_bytes(b"nope")
    out = tmp_path / "out"
    result = run_module("convert_to_image_directory", "--input_path", src, "--output_path", out)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: input_path: none of the 2 image files in {src} could be read; check the files are valid images"]
    assert not out.exists()


def test_empty_and_missing_inputs(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="is empty"):
        convert_to_image_directory(tmp_path / "empty", tmp_path / "o1")
    with pytest.raises(UserError, match="does not exist"):
        convert_to_image_directory(tmp_path / "missing", tmp_path / "o2")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "readme.md").write_text("x")
    with pytest.raises(UserError, match="no image files found"):
        convert_to_image_directory(tmp_path / "docs", tmp_path / "o3")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o3").exists()


def _png_bytes(tmp_path):
    return make_image(tmp_path / "ok.png").read_bytes()


def _zip_with(tmp_path, name, member, data=None, symlink=False):
    archive = tmp_path / name
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("good/a.png", _png_bytes(tmp_path))
        info = zipfile.ZipInfo(member)
        if symlink:
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
        else:
            zf.writestr(info, data if data is not None else _png_bytes(tmp_path))
    return archive


def _tar_with(tmp_path, name, member, symlink=False):
    archive = tmp_path / name
    data = _png_bytes(tmp_path)
    with tarfile.open(archive, "w") as tf:
        good = tarfile.TarInfo("good/a.png")
        good.size = len(data)
        tf.addfile(good, io.BytesIO(data))
        info = tarfile.TarInfo(member)
        if symlink:
            info.type = tarfile.SYMTYPE
            info.linkname = "/etc/passwd"
            tf.addfile(info)
        else:
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return archive


UNSAFE = [
    ("zip", "../escaped.png", False, "leaves its folder"),
    ("zip", "/tmp/absolute_designer_resnet_test.png", False, "leaves its folder"),
    ("zip", "good/link.png", True, "symbolic link"),
    ("tar", "../escaped.png", False, "leaves its folder"),
    ("tar", "/tmp/absolute_designer_resnet_test.png", False, "leaves its folder"),
    ("tar", "good/link.png", True, "is a link"),
]


@pytest.mark.parametrize("kind,member,symlink,message", UNSAFE)
def test_unsafe_archive_members_are_refused(tmp_path, kind, member, symlink, message):
    work = tmp_path / "work"
    work.mkdir()
    maker = _zip_with if kind == "zip" else _tar_with
    archive = maker(work, f"bad.{kind}", member, symlink=symlink)
    (work / "ok.png").unlink()
    before = files_under(tmp_path)
    out = work / "deep" / "out"
    with pytest.raises(UserError, match=message):
        convert_to_image_directory(archive, out)
    assert files_under(tmp_path) == before  # nothing written anywhere, output not created
    assert not (tmp_path / "escaped.png").exists()


def test_unsafe_archive_cli_exit_code_and_one_line(tmp_path):
    archive = _zip_with(tmp_path, "bad.zip", "../../escaped.png")
    result = run_module("convert_to_image_directory", "--input_path", archive, "--output_path", tmp_path / "out")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "leaves its folder" in lines[0] and "Traceback" not in result.stderr


def test_single_file_gz_of_a_tar_and_corrupt_archive(labelled_folder, tmp_path):
    tar = tmp_path / "pets.tar"
    with tarfile.open(tar, "w") as tf:
        tf.add(labelled_folder, arcname="pets")
    bz = tmp_path / "pets.tar.bz2"
    with tarfile.open(bz, "w:bz2") as tf:
        tf.add(labelled_folder, arcname="pets")
    assert convert_to_image_directory(tar, tmp_path / "o1").written == 12
    assert convert_to_image_directory(bz, tmp_path / "o2").written == 12
    broken = tmp_path / "broken.zip"
    broken.write_bytes(bz.read_bytes()[:100])
    with pytest.raises(UserError, match="not a zip, tar, gz or bz2 archive|corrupt or truncated"):
        convert_to_image_directory(broken, tmp_path / "o3")
    assert not (tmp_path / "o3").exists()


def test_converting_an_image_directory_keeps_its_labels(labelled_folder, tmp_path):
    convert_to_image_directory(labelled_folder, tmp_path / "first")
    shutil.copytree(tmp_path / "first", tmp_path / "copy")
    report = convert_to_image_directory(tmp_path / "copy", tmp_path / "second")
    assert report.written == 12 and report.categories == ["cat", "dog", "fish"]


# --- archive limits, `./` members, odd names, truncated zips -------------------------------------

import bz2
import gzip
import struct

from designer_resnet.data import archives


def _one_png_zip(tmp_path, name, extra_members, compression=zipfile.ZIP_DEFLATED):
    """A zip holding one good image plus `extra_members` [(name, bytes)]."""
    archive = tmp_path / name
    png = _png_bytes(tmp_path)
    with zipfile.ZipFile(archive, "w", compression) as zf:
        zf.writestr("good/a.png", png)
        for member, data in extra_members:
            zf.writestr(member, data)
    return archive


def test_zip_bomb_over_the_compression_ratio_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(archives, "RATIO_FREE_BYTES", 0, raising=False)
    archive = _one_png_zip(tmp_path, "bomb.zip", [("good/zeros.bin", b"\0" * 2_000_000)])
    assert archive.stat().st_size < 10_000  # ~2 MB of zeros packs to a few KB: ratio far above the cap
    with pytest.raises(UserError, match=r"input_path: archive bomb\.zip .*compression ratio"):
        convert_to_image_directory(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bz2_bomb_is_stopped_while_streaming(tmp_path, monkeypatch):
    monkeypatch.setattr(archives, "RATIO_FREE_BYTES", 0, raising=False)
    archive = tmp_path / "photo.png.bz2"
    archive.write_bytes(bz2.compress(_png_bytes(tmp_path) + b"\0" * 3_000_000))  # no declared size to check
    with pytest.raises(UserError, match="compression ratio"):
        convert_to_image_directory(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_extracted_size_cap_and_parameter(labelled_folder, tmp_path):
    archive = tmp_path / "pets.tar"  # uncompressed: ratio 1, only the absolute cap applies
    with tarfile.open(archive, "w") as tf:
        tf.add(labelled_folder, arcname="pets")
    with pytest.raises(UserError, match=r"input_path: archive pets\.tar .*max_extracted_gb"):
        convert_to_image_directory(archive, tmp_path / "o1", max_extracted_gb=0.000001)
    assert not (tmp_path / "o1").exists()
    result = run_module("convert_to_image_directory", "--input_path", archive, "--output_path", tmp_path / "o2",
                        "--max_extracted_gb", "0.000001")
    assert result.returncode == 1 and not (tmp_path / "o2").exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: input_path: archive pets.tar") and "max_extracted_gb" in lines[0]
    result = run_module("convert_to_image_directory", "--input_path", archive, "--output_path", tmp_path / "o3",
                        "--max_extracted_gb", "1")
    assert result.returncode == 0, result.stderr


def test_member_count_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(archives, "MAX_MEMBERS", 3, raising=False)
    png = _png_bytes(tmp_path)
    archive = _one_png_zip(tmp_path, "many.zip", [(f"good/{i}.png", png) for i in range(5)])
    with pytest.raises(UserError, match=r"input_path: archive many\.zip .*members"):
        convert_to_image_directory(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_image_padded_with_zeros_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(archives, "MAX_IMAGE_BYTES", 20_000, raising=False)
    padded = _png_bytes(tmp_path) + b"\0" * 50_000  # a valid PNG that PIL still opens
    stored = _one_png_zip(tmp_path, "padded.zip", [("good/big.png", padded)], compression=zipfile.ZIP_STORED)
    with pytest.raises(UserError, match=r"input_path: archive padded\.zip: member 'good/big\.png' .*one image"):
        convert_to_image_directory(stored, tmp_path / "o1")
    single = tmp_path / "big.png.gz"  # no trustworthy declared size: caught while streaming
    single.write_bytes(gzip.compress(padded))
    with pytest.raises(UserError, match="one image"):
        convert_to_image_directory(single, tmp_path / "o2")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def _overlapping_zip(tmp_path):
    """Fifield-style overlap: member a.bin's stored data is member b.png's local header and data."""
    png = _png_bytes(tmp_path)
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("b.png", png)
    inner_bytes = inner.getvalue()
    inner_cd = struct.unpack("<I", inner_bytes[inner_bytes.rfind(b"PK\x05\x06") + 16:][:4])[0]
    b_local, b_central = inner_bytes[:inner_cd], inner_bytes[inner_cd:inner_bytes.rfind(b"PK\x05\x06")]
    outer = io.BytesIO()
    with zipfile.ZipFile(outer, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.bin", b_local)
    data = outer.getvalue()
    eocd = data.rfind(b"PK\x05\x06")
    cd_size, cd_off = struct.unpack("<II", data[eocd + 12:eocd + 20])
    b_offset = 30 + len("a.bin")  # b's local header starts where a.bin's data does
    b_central = b_central[:42] + struct.pack("<I", b_offset) + b_central[46:]
    central = data[cd_off:eocd] + b_central
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 2, 2, len(central), cd_off, 0)
    archive = tmp_path / "overlap.zip"
    archive.write_bytes(data[:cd_off] + central + end)
    with zipfile.ZipFile(archive) as zf:  # Python's zipfile reads both members without complaint
        assert zf.read("b.png") == png and len(zf.infolist()) == 2
    return archive


def test_overlapping_zip_entries_are_refused(tmp_path):
    archive = _overlapping_zip(tmp_path)
    with pytest.raises(UserError, match=r"input_path: archive overlap\.zip: .*overlap"):
        convert_to_image_directory(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_dot_slash_tar_of_a_folder_is_accepted(labelled_folder, tmp_path):
    archive = tmp_path / "photos.tgz"  # what `tar czf photos.tgz -C photos .` makes
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(labelled_folder, arcname=".")
    assert tarfile.open(archive).getnames()[:2] == [".", "./cat"]
    report = convert_to_image_directory(archive, tmp_path / "out")
    assert report.written == 12 and report.categories == ["cat", "dog", "fish"]
    bad = _tar_with(tmp_path, "bad.tar", "./../escaped.png")
    with pytest.raises(UserError, match="leaves its folder"):
        convert_to_image_directory(bad, tmp_path / "o2")


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_overlong_member_name_is_one_line(tmp_path, kind):
    maker = _zip_with if kind == "zip" else _tar_with
    archive = maker(tmp_path, f"long.{kind}", "good/" + "n" * 300 + ".png")
    with pytest.raises(UserError, match=rf"input_path: archive long\.{kind}: member .* too long"):
        convert_to_image_directory(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("order", [["a/x.png", "a"], ["a", "a/x.png"]])
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_member_that_is_both_file_and_folder(tmp_path, kind, order):
    png = _png_bytes(tmp_path)
    archive = tmp_path / f"clash.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for name in order:
                zf.writestr(name, png)
    else:
        with tarfile.open(archive, "w") as tf:
            for name in order:
                info = tarfile.TarInfo(name)
                info.size = len(png)
                tf.addfile(info, io.BytesIO(png))
    with pytest.raises(UserError, match=rf"input_path: archive clash\.{kind}: 'a' is both a file and a folder"):
        convert_to_image_directory(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_zip_says_truncated(labelled_folder, tmp_path):
    archive = tmp_path / "pets.zip"
    _zip_folder(labelled_folder, archive, "pets")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(UserError, match=r"input_path: archive pets\.zip is a damaged or truncated zip.*"
                                        r"re-create .* upload it again"):
        convert_to_image_directory(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_archive_larger_than_the_free_disk_is_refused_up_front(labelled_folder, tmp_path, monkeypatch):
    archive = tmp_path / "pets.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(labelled_folder, arcname="pets")
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda p: real(p)._replace(free=1000))
    with pytest.raises(UserError, match=r"input_path: archive pets\.tar .*free"):
        convert_to_image_directory(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()
