"""Score Image Model (parallel): its entry script driven as Azure ML's parallel job drives it, then Merge Scored Parts."""

from __future__ import annotations

import importlib.util
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from designer_resnet.directories.dataframe_directory import DATA_FILE, SCHEMA_FILE, read_dataframe_directory
from designer_resnet.directories.image_directory import ImageDirectory
from designer_resnet.errors import UserError
from designer_resnet.models.create import create_untrained_model
from designer_resnet.runner.parallel import drive, mini_batches
from designer_resnet.scoring.parallel import PART_SUFFIX, ROW, merge_parts
from designer_resnet.scoring.score import score_image_model
from designer_resnet.training.train import TrainConfig, train

from conftest import REPO, convert_train_valid

ENTRY = REPO / "src" / "designer_resnet" / "components" / "score_image_model_parallel.py"
PROB = "Scored Probabilities_"
# What Azure's driver puts on sys.argv beside the program arguments (before and after them).
DRIVER_FLAGS = ["--client_sdk_version", "1.62.0", "--scoring_module_name", "score_image_model_parallel.py",
                "--mini_batch_size", "3", "--error_threshold", "0", "--output_action", "summary_only",
                "--logging_level", "INFO", "--run_invocation_timeout", "600", "--run_max_try", "3"]
DRIVER_FLAGS_AFTER = ["--process_count_per_node", "1", "--create_snapshot_at_runtime", "True"]


@pytest.fixture(scope="module")
def scoring(tmp_path_factory):
    """root/model (resnet18, 1 epoch, classes a b c), root/valid (9 images, Converted) and root/raw_valid (its
    ImageFolder), root/expected: Score Image Model on root/valid."""
    root = convert_train_valid(tmp_path_factory.mktemp("parallel_scoring"), 4, 3)
    create_untrained_model(root / "untrained", {"model_name": "resnet18", "pretrained": False})
    train(root / "untrained", root / "train", root / "valid", root / "model",
          TrainConfig(epochs=1, batch_size=4, learning_rate=0.01, workers=0))
    score_image_model(root / "model", root / "valid", root / "expected", batch_size=4, workers=0)
    return root


def _program(model: Path, dataset: Path, parts: Path) -> list[str]:
    return ["--trained_model", str(model), "--dataset", str(dataset), "--scored_parts", str(parts),
            "--batch_size", "2", "--precision", "auto", "--memory_format", "auto"]


def _load_entry(path: Path = ENTRY):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _score_in_process(model: Path, dataset: Path, parts: Path, monkeypatch, *, seed: int = 0) -> list[str]:
    """The driver's call sequence in this process: shuffled mini-batches of 3 files, metadata files included."""
    files = [str(p.resolve()) for p in dataset.rglob("*") if p.is_file()]
    random.Random(seed).shuffle(files)
    batches = [files[k:k + 3] for k in range(0, len(files), 3)]
    monkeypatch.setattr(sys, "argv", [str(ENTRY), *DRIVER_FLAGS, *_program(model, dataset, parts),
                                      *DRIVER_FLAGS_AFTER])
    entry = _load_entry()
    entry.init()
    results = []
    for batch in batches:
        answer = entry.run(batch)
        assert len(answer) == len(batch)  # one result per item: the driver counts them
        results += answer
    entry.shutdown()
    return results


def _assert_same_scored(actual: Path, expected: Path) -> None:
    """The two DataFrameDirectories hold the same table (probabilities within 1e-5), schema and `_meta.yaml`."""
    a, e = read_dataframe_directory(actual), read_dataframe_directory(expected)
    assert list(a.columns) == list(e.columns)
    probs = [c for c in e.columns if c.startswith(PROB)]
    others = [c for c in e.columns if c not in probs]
    pd.testing.assert_frame_equal(a[others], e[others])
    np.testing.assert_allclose(a[probs].to_numpy(), e[probs].to_numpy(), rtol=0, atol=1e-5)  # NaN == NaN
    assert (actual / SCHEMA_FILE).read_text() == (expected / SCHEMA_FILE).read_text()
    assert (actual / "_meta.yaml").read_text() == (expected / "_meta.yaml").read_text()


def _rows_in_parts(parts: Path) -> list[int]:
    return [row for part in sorted(parts.glob("*" + PART_SUFFIX)) for row in pd.read_parquet(part)[ROW]]


def test_parallel_scores_equal_score_image_model_from_the_driver_and_in_process(scoring, tmp_path, monkeypatch):
    model, valid = scoring / "model", scoring / "valid"
    report = drive(ENTRY, valid, [*DRIVER_FLAGS, *_program(model, valid, tmp_path / "parts")],
                   mini_batch_size=3, processes=2, max_retries=0, mini_batch_error_threshold=0, log=lambda _: None)
    assert report.items == sum(1 for p in valid.rglob("*") if p.is_file()) and not report.failed
    merged = merge_parts(tmp_path / "parts", valid, tmp_path / "merged")
    assert merged.scored == 9 and merged.failed == []
    _assert_same_scored(tmp_path / "merged", scoring / "expected")

    results = _score_in_process(model, valid, tmp_path / "parts2", monkeypatch, seed=1)
    assert sum(r.endswith(": scored") for r in results) == 9
    assert {Path(r.split(": ")[0]).name for r in results if not r.endswith(": scored")} >= {
        "_meta.yaml", "images.lst"}
    assert sorted(_rows_in_parts(tmp_path / "parts2")) == list(range(9))
    merge_parts(tmp_path / "parts2", valid, tmp_path / "merged2")
    _assert_same_scored(tmp_path / "merged2", scoring / "expected")


def test_an_unreadable_image_is_left_unscored_and_named(scoring, tmp_path, monkeypatch):
    valid = tmp_path / "valid"
    shutil.copytree(scoring / "valid", valid)
    directory = ImageDirectory.load(valid)
    broken = directory.rows[4]
    path = directory.image_path(broken).resolve()
    path.write_bytes(path.read_bytes()[:60])  # a truncated PNG: its header, no pixels
    score_image_model(scoring / "model", valid, tmp_path / "expected", batch_size=4, workers=0)

    results = _score_in_process(scoring / "model", valid, tmp_path / "parts", monkeypatch)
    assert [r for r in results if ": unreadable (" in r] == [r for r in results if r.startswith(f"{path}: ")]
    report = merge_parts(tmp_path / "parts", valid, tmp_path / "merged")
    assert report.scored == 8 and [row_id for row_id, _ in report.failed] == [broken["id"]]
    assert "truncated" in report.failed[0][1]
    table = read_dataframe_directory(tmp_path / "merged")
    bad = table[table["id"] == broken["id"]].iloc[0]
    assert bad["Scored Labels"] is None and bad[[c for c in table.columns if c.startswith(PROB)]].isna().all()
    assert table.drop(index=bad.name)["Scored Labels"].notna().all()
    _assert_same_scored(tmp_path / "merged", tmp_path / "expected")


WRAPPER = '''
import os, sys, time
from pathlib import Path
import importlib.util

spec = importlib.util.spec_from_file_location("real_entry", {entry!r})
real = importlib.util.module_from_spec(spec)
spec.loader.exec_module(real)
FLAKY, BROKEN, MARKERS, PARTS, PARTS_BEFORE_RETRY = {flaky!r}, {broken!r}, Path({markers!r}), Path({parts!r}), {n!r}


def init():
    real.init()
    (MARKERS / f"ready.{{os.getpid()}}").touch()


def run(mini_batch):
    if BROKEN in mini_batch:
        raise RuntimeError("this mini-batch fails on every try")
    answer = real.run(mini_batch)
    if FLAKY not in mini_batch:
        return answer
    try:  # its part is written; the first try fails all the same, as a timed-out one does
        os.close(os.open(MARKERS / "failed_once", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return answer
    # Fail once the other worker is idle, waiting for work: the retry is then its, in a second process.
    deadline = time.time() + 60
    while time.time() < deadline and (len(list(MARKERS.glob("ready.*"))) < 2
                                      or len(list(PARTS.glob("*.scores.parquet"))) < PARTS_BEFORE_RETRY):
        time.sleep(0.05)
    time.sleep(1.0)
    raise RuntimeError("the node lost its connection after writing the part")
'''


def _flaky_entry(tmp_path: Path, dataset: Path, parts: Path, flaky: str, broken: str) -> Path:
    """An entry script whose run() fails once for the mini-batch holding `flaky`, on every try for `broken`'s."""
    directory = ImageDirectory.load(dataset)
    listed = {str(directory.image_path(row).resolve()) for row in directory.rows}
    n = sum(1 for batch in mini_batches(dataset, 3) if listed & set(batch) and broken not in batch)
    (tmp_path / "markers").mkdir()
    script = tmp_path / "flaky_entry.py"
    script.write_text(WRAPPER.format(entry=str(ENTRY), flaky=flaky, broken=broken, markers=str(tmp_path / "markers"),
                                     parts=str(parts), n=n))
    return script


def test_retried_mini_batches_score_each_row_once_and_lost_ones_are_reported(scoring, tmp_path):
    valid, parts, lines = scoring / "valid", tmp_path / "parts", []
    directory = ImageDirectory.load(valid)
    paths = [str(directory.image_path(row).resolve()) for row in directory.rows]
    flaky, broken = paths[1], paths[7]
    [lost_batch] = [batch for batch in mini_batches(valid, 3) if broken in batch]
    assert flaky not in lost_batch
    lost_ids = [row["id"] for row, path in zip(directory.rows, paths) if path in lost_batch]
    script = _flaky_entry(tmp_path, valid, parts, flaky, broken)
    report = drive(script, valid, _program(scoring / "model", valid, parts), mini_batch_size=3, processes=2,
                   max_retries=1, mini_batch_error_threshold=-1, log=lines.append)
    assert len(report.failed) == 1 and report.tries == report.mini_batches + 2
    assert any("failed on try 1: RuntimeError: the node lost" in line for line in lines)
    rows = _rows_in_parts(parts)
    assert len(rows) == len(set(rows)), "a retried mini-batch left a second part with the same rows"
    assert sorted(rows) == [i for i, row in enumerate(directory.rows) if row["id"] not in lost_ids]

    merged = merge_parts(parts, valid, tmp_path / "merged")
    assert sorted(row_id for row_id, _ in merged.failed) == sorted(lost_ids) and merged.scored == 9 - len(lost_ids)
    assert all(reason.startswith("not scored") for _, reason in merged.failed)
    table, expected = read_dataframe_directory(tmp_path / "merged"), read_dataframe_directory(scoring / "expected")
    assert table["id"].tolist() == expected["id"].tolist()  # no row twice, in the dataset's order
    lost = table["id"].isin(lost_ids)
    assert table.loc[lost, "Scored Labels"].isna().all() and table.loc[lost, PROB + "a"].isna().all()
    probs = [PROB + c for c in "abc"]
    pd.testing.assert_frame_equal(table.loc[~lost, ["id", "category", "Scored Labels"]],
                                  expected.loc[~lost, ["id", "category", "Scored Labels"]])
    np.testing.assert_allclose(table.loc[~lost, probs], expected.loc[~lost, probs], rtol=0, atol=1e-5)


def _text_files(folder: Path, count: int) -> Path:
    """`count` small text files: input for an entry script that needs no model."""
    folder.mkdir()
    for k in range(count):
        (folder / f"{k}.txt").write_text(str(k))
    return folder


def test_the_driver_fails_the_job_past_the_error_threshold(tmp_path):
    """No model here: the threshold is the driver's, whatever the entry script."""
    _text_files(tmp_path / "data", 4)
    script = tmp_path / "entry.py"
    script.write_text("def run(mini_batch):\n"
                      "    if any(p.endswith('2.txt') for p in mini_batch):\n"
                      "        raise ValueError('cannot read\\nthis one')\n"
                      "    return mini_batch\n")
    with pytest.raises(UserError, match=r"1 mini-batch\(es\) failed .* mini_batch_error_threshold 0.*ValueError") as no:
        drive(script, tmp_path / "data", [], mini_batch_size=2, processes=1, max_retries=1,
              mini_batch_error_threshold=0, log=lambda _: None)
    assert "\n" not in str(no.value)
    report = drive(script, tmp_path / "data", [], mini_batch_size=2, processes=1, max_retries=1,
                   mini_batch_error_threshold=1, log=lambda _: None)
    assert report.failed and report.items == 2 and report.tries == 3


def test_a_worker_process_that_dies_mid_mini_batch_is_replaced_and_its_mini_batch_retried(tmp_path):
    """As when the out-of-memory killer ends a worker: the job neither hangs nor loses the mini-batch."""
    _text_files(tmp_path / "data", 5)
    script = tmp_path / "entry.py"
    script.write_text("import os\nfrom pathlib import Path\n"
                      f"MARKER = Path({str(tmp_path / 'died')!r})\n"
                      "def run(mini_batch):\n"
                      "    try:  # exactly one worker dies: creating the marker is atomic, so two cannot both win\n"
                      "        os.close(os.open(MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY))\n"
                      "    except FileExistsError:\n"
                      "        return mini_batch\n"
                      "    os._exit(9)\n")
    # A subprocess with a time limit: a driver that waited for the dead worker would hang the test run.
    result = subprocess.run([sys.executable, "-m", "designer_resnet.runner.parallel", "--entry-script", str(script),
                             "--input-data", str(tmp_path / "data"), "--mini-batch-size", "2", "--processes", "2",
                             "--max-retries", "1", "--mini-batch-error-threshold", "0"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert re.search(r"mini-batch \d failed on try 1: its worker process ended \(exit code 9\)", result.stdout)
    assert "3 mini-batches, 5 items, 4 tries in 2 worker processes; 0 mini-batch(es) failed" in result.stdout


def test_a_plain_image_folder_is_scored_the_same(scoring, tmp_path, monkeypatch):
    raw = tmp_path / "raw"
    shutil.copytree(scoring / "raw_valid", raw)
    score_image_model(scoring / "model", raw, tmp_path / "expected", batch_size=4, workers=0)
    results = _score_in_process(scoring / "model", raw, tmp_path / "parts", monkeypatch)
    assert sum(r.endswith(": scored") for r in results) == 9
    assert merge_parts(tmp_path / "parts", raw, tmp_path / "merged").failed == []
    _assert_same_scored(tmp_path / "merged", tmp_path / "expected")


def test_merge_refuses_a_missing_or_empty_parts_folder(scoring, tmp_path):
    (tmp_path / "empty").mkdir()
    for parts in (tmp_path / "empty", tmp_path / "missing"):
        with pytest.raises(UserError, match="scored_parts: .* holds no scored parts") as refused:
            merge_parts(parts, scoring / "valid", tmp_path / "merged")
        assert "\n" not in str(refused.value)
    assert not (tmp_path / "merged" / DATA_FILE).exists()


def test_merge_refuses_parts_of_another_model(scoring, tmp_path, monkeypatch):
    valid, parts = scoring / "valid", tmp_path / "parts"
    _score_in_process(scoring / "model", valid, parts, monkeypatch)
    # A part another model (classes a, b, d) wrote into the same folder: its probability columns name its classes.
    foreign = sorted(parts.glob("*" + PART_SUFFIX))[-1]
    pd.read_parquet(foreign).rename(columns={PROB + "c": PROB + "d"}).to_parquet(foreign, index=False)
    with pytest.raises(UserError, match="not scored with the same model and dataset") as refused:
        merge_parts(parts, valid, tmp_path / "merged")
    assert "\n" not in str(refused.value)
    assert not (tmp_path / "merged").exists()


def test_entry_init_refuses_a_missing_trained_model(scoring, tmp_path, monkeypatch, capsys):
    program = _program(scoring / "model", scoring / "valid", tmp_path / "parts")[2:]
    monkeypatch.setattr(sys, "argv", ["entry", *DRIVER_FLAGS, *program])
    entry = _load_entry()
    try:
        entry.init()
    except SystemExit as exited:  # the parser's one `error:` line on stderr, exit code 1
        assert exited.code == 1
        lines = capsys.readouterr().err.strip().splitlines()
    except UserError as refused:
        lines = str(refused).splitlines()
    else:
        pytest.fail("init() accepted a command line without --trained_model")
    assert len(lines) == 1 and "--trained_model" in lines[0]


def test_two_rows_naming_one_file_are_both_scored(scoring, tmp_path, monkeypatch):
    valid = tmp_path / "valid"
    shutil.copytree(scoring / "valid", valid)
    rows = [json.loads(line) for line in (valid / "images.lst").read_text().splitlines()]
    rows[1]["image_info"]["file_name"] = rows[0]["image_info"]["file_name"]  # e.g. an oversampled class
    (valid / "images.lst").write_text("".join(json.dumps(row) + "\n" for row in rows))
    score_image_model(scoring / "model", valid, tmp_path / "expected", batch_size=4, workers=0)
    _score_in_process(scoring / "model", valid, tmp_path / "parts", monkeypatch)
    assert merge_parts(tmp_path / "parts", valid, tmp_path / "merged").failed == []
    _assert_same_scored(tmp_path / "merged", tmp_path / "expected")


@pytest.mark.slow
def test_local_runner_runs_the_batch_scoring_pipeline(scoring, tmp_path):
    runs = tmp_path / "runs"
    result = subprocess.run(
        [str(Path(sys.executable).with_name("designer-resnet")), "run", str(REPO / "pipelines" / "batch_scoring.yml"),
         "--set", f"inputs.images={scoring / 'raw_valid'}", "--set", f"inputs.trained_model={scoring / 'model'}",
         "--set", "inputs.mini_batch_size=4", "--set", "inputs.node_count=2", "--runs-dir", str(runs)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    [merged] = runs.glob("*/merge/scored_dataset")
    [converted] = runs.glob("*/convert/output_path")
    score_image_model(scoring / "model", converted, tmp_path / "expected", batch_size=4, workers=0)
    _assert_same_scored(merged, tmp_path / "expected")
