"""The local runner under hostile and careless input (issue 15, round 3): one `error:` line and nothing run,
nothing written outside runs/; a damaged reuse index costs reuse, never the run."""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import pytest
import yaml

from designer_resnet import cli
from designer_resnet.errors import UserError
from designer_resnet.runner.run import CACHE_INDEX, data_fingerprint, run_pipeline

from test_runner_checks import _pipeline


def _quiet(*_):
    pass


def _run(path: Path, tmp_path: Path, overrides: dict | None = None):
    return run_pipeline(path, overrides or {}, runs_dir=tmp_path / "runs", echo=_quiet)


def _three_jobs(tmp_path: Path) -> Path:
    """Jobs a (reads the `photos` folder), b, and c (takes the `greeting` input): c runs third."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "1.png").write_bytes(b"x")
    inputs = {"greeting": "hi", "count": 2, "photos": {"type": "uri_folder", "path": "photos"}}
    return _pipeline(tmp_path, {"a": {"inputs": {"source": "${{parent.inputs.photos}}"}}, "b": {},
                                "c": {"inputs": {"greeting": "${{parent.inputs.greeting}}"}}}, inputs)


def _reused(result) -> dict[str, bool]:
    return {name: node.reused for name, node in result.nodes.items()}


# Item 6: photos added to a class folder that is a symbolic link are seen by the reuse key.

def _linked_classes(tmp_path: Path) -> tuple[Path, Path]:
    """`data/<class>` links to `store/<class>`, as README recommends; returns (data, store)."""
    store, data = tmp_path / "store", tmp_path / "data"
    for name in ("cat", "dog"):
        (store / name).mkdir(parents=True)
        (store / name / "1.png").write_bytes(b"x")
        data.mkdir(exist_ok=True)
        (data / name).symlink_to(store / name, target_is_directory=True)
    return data, store


def test_rerun_does_not_reuse_after_photos_are_added_to_a_linked_class_folder(tmp_path):
    data, store = _linked_classes(tmp_path)
    path = _pipeline(tmp_path, {"a": {"inputs": {"source": "${{parent.inputs.photos}}"}}},
                     {"photos": {"type": "uri_folder", "path": "data"}})
    assert _reused(_run(path, tmp_path)) == {"a": False}
    assert _reused(_run(path, tmp_path)) == {"a": True}
    (store / "cat" / "2.png").write_bytes(b"y")
    assert _reused(_run(path, tmp_path)) == {"a": False}


def test_fingerprint_follows_linked_folders_and_ends_on_a_link_cycle(tmp_path):
    data, store = _linked_classes(tmp_path)
    (store / "cat" / "loop").symlink_to(store, target_is_directory=True)  # store/cat/loop/cat/loop/...
    (data / "broken").symlink_to(tmp_path / "nowhere")
    before = data_fingerprint(data)
    (store / "dog" / "2.png").write_bytes(b"y")
    assert data_fingerprint(data) != before


# Item 17: names and values are checked before the first job; nothing is written outside runs/.

def _refused_before_any_job(path: Path, tmp_path: Path, match: str, overrides: dict | None = None) -> str:
    with pytest.raises(UserError, match=match) as info:
        _run(path, tmp_path, overrides)
    message = str(info.value)
    assert "\n" not in message and len(message) < 600, message
    assert not (tmp_path / "runs").exists()
    return message


def test_unbalanced_quote_in_a_value_is_refused_before_any_job(tmp_path):
    path = _three_jobs(tmp_path)
    message = _refused_before_any_job(path, tmp_path, "quote", {"greeting": "it's"})
    assert "'c'" in message and "inputs.greeting" in message


def test_unbalanced_quote_in_a_literal_is_refused_before_any_job(tmp_path):
    path = _pipeline(tmp_path, {"a": {}, "b": {}, "c": {"inputs": {"greeting": 'say "hi'}}})
    assert "inputs.greeting" in _refused_before_any_job(path, tmp_path, "quote")


def test_a_value_of_200000_characters_is_refused_before_any_job(tmp_path):
    path = _three_jobs(tmp_path)
    message = _refused_before_any_job(path, tmp_path, "greeting.*200,000 characters", {"greeting": "x" * 200_000})
    assert "x" * 100 not in message


def test_a_data_path_of_200000_characters_is_refused_before_any_job(tmp_path):
    path = _three_jobs(tmp_path)
    _refused_before_any_job(path, tmp_path, "inputs.photos.*200,000 characters", {"photos": "/" + "p" * 199_999})


def test_a_300_character_input_path_is_refused_before_any_job(tmp_path):
    path = _three_jobs(tmp_path)
    too_long = str(tmp_path / ("p" * 300))  # one name over the 255 bytes a file system allows
    _refused_before_any_job(path, tmp_path, "inputs.photos.*give a local folder", {"photos": too_long})


@pytest.mark.parametrize("name", ["../../x", "a/b", ".", "", "..", "Train", "1st", "a-b", "x" * 256])
def test_a_job_name_that_is_not_a_node_name_is_refused_before_any_job(tmp_path, name):
    path = _pipeline(tmp_path, {"a": {}, name: {"inputs": {"count": 5}}})
    _refused_before_any_job(path, tmp_path, "job name .* lowercase letters, digits and _")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["comps", "p.yml"]  # nothing written beside runs/


def test_a_job_name_that_is_not_text_is_refused(tmp_path):
    path = _pipeline(tmp_path, {"a": {}})
    doc = yaml.safe_load(path.read_text())
    doc["jobs"][7] = dict(doc["jobs"]["a"])
    path.write_text(yaml.safe_dump(doc))
    _refused_before_any_job(path, tmp_path, "job name 7")


@pytest.mark.parametrize("args", [["--set", "inputs.greeting=it's"], ["--set", "inputs.greeting=" + "x" * 200_000],
                                  ["--set", "inputs.photos=" + "p" * 300], ["--set", "inputs." + "n" * 5000 + "=1"]],
                         ids=["quote", "long-value", "long-path", "long-name"])
def test_hostile_set_values_are_one_line_from_the_cli(tmp_path, monkeypatch, capsys, args):
    path = _three_jobs(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["run", str(path), *args]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and len(err) < 600, err[:2000]
    assert not (tmp_path / "runs").exists()


# Item 17: the reuse index (runs/.cache.json) is written whole, and a damaged one is read as empty.

@pytest.mark.parametrize("damage", ["truncated", "list", "not-text", "binary", "folder"])
def test_a_damaged_reuse_index_is_read_as_empty_with_a_warning(tmp_path, caplog, damage):
    path = _pipeline(tmp_path, {"a": {}, "b": {"inputs": {"count": 3}}})
    _run(path, tmp_path)
    cache = tmp_path / "runs" / CACHE_INDEX
    text = cache.read_text()
    if damage == "folder":
        cache.unlink()
        cache.mkdir()
    else:
        cache.write_bytes({"truncated": text[: len(text) // 2].encode(), "list": b"[1, 2]",
                           "not-text": json.dumps({k: 5 for k in json.loads(text)}).encode(),
                           "binary": b"\xff\xfe\x00"}[damage])
    with caplog.at_level(logging.WARNING):
        assert _reused(_run(path, tmp_path)) == {"a": False, "b": False}
    assert any(CACHE_INDEX in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    if damage != "folder":  # the index is rewritten whole: the next run reuses
        assert _reused(_run(path, tmp_path)) == {"a": True, "b": True}


def test_a_reuse_index_edited_to_point_at_other_folders_reuses_nothing(tmp_path):
    path = _pipeline(tmp_path, {"a": {}, "b": {"inputs": {"count": 3}}})
    first = _run(path, tmp_path)
    cache = tmp_path / "runs" / CACHE_INDEX
    entries = json.loads(cache.read_text())
    swapped = dict(zip(entries, reversed(list(entries.values()))))  # a's key -> b's folder, and back
    cache.write_text(json.dumps(swapped))
    assert {str(first.nodes[n].folder) for n in "ab"} == set(swapped.values())
    assert _reused(_run(path, tmp_path)) == {"a": False, "b": False}


def test_a_failed_write_of_the_reuse_index_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    path = _pipeline(tmp_path, {"a": {"inputs": {"greeting": "${{parent.inputs.greeting}}"}}})
    _run(path, tmp_path)
    cache = tmp_path / "runs" / CACHE_INDEX
    before = json.loads(cache.read_text())
    real_write = Path.write_text

    def disk_full_halfway(self, data, *args, **kwargs):
        if self.name.startswith(CACHE_INDEX):
            real_write(self, data[: len(data) // 2], *args, **kwargs)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, data, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full_halfway)
    _run(path, tmp_path, {"greeting": "another"})  # the job itself finished: the run succeeds
    monkeypatch.undo()
    assert json.loads(cache.read_text()) == before
    assert sorted(p.name for p in cache.parent.iterdir() if p.is_file()) == [CACHE_INDEX]
