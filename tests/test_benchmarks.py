"""The benchmarks run end to end and print their ratios (tiny arguments: this checks they work, not the figures)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO


def run_benchmark(script: str, *args: str) -> str:
    """The benchmark's printed lines, after checking it exits 0; one thread, so a busy machine does not stall it."""
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_loader_benchmark_prints_the_ratios_and_that_apply_kept_every_jpeg_byte_for_byte():
    out = run_benchmark("loader_throughput.py", "--images", "12", "--size", "32", "--batch-size", "4",
                        "--repeats", "1")
    assert "ratio uint8 / before: " in out and "ratio JPEG bytes / before: " in out
    # The target's reference, the code before issue 16, runs from this clone's history where it has it.
    history = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", "37cf428^{commit}"]).returncode == 0
    assert ("ratio uint8 / today's code: " in out) == history, out
    assert ("today's code (37cf428): not timed" in out) == (not history), out
    assert "12 of 12 output files keep their input's bytes: yes; output / input bytes 1.000" in out


@pytest.mark.slow
def test_train_benchmark_trains_from_jpeg_files_decoded_on_the_device_against_the_plain_loop():
    out = run_benchmark("train_throughput.py", "--from-jpeg", "--jpeg-decode", "device", "--images", "16",
                        "--size", "16", "--batch-size", "8", "--epochs", "2", "--repeats", "1")
    assert "jpeg_decode device" in out and "ratio ours / plain: " in out


@pytest.mark.slow
def test_train_benchmark_default_mode_still_compares_ours_with_the_plain_loop():
    out = run_benchmark("train_throughput.py", "--images", "16", "--size", "16", "--batch-size", "8", "--epochs", "2",
                        "--repeats", "1")
    assert "ratio ours / plain: " in out and "JPEG" not in out


@pytest.mark.slow
def test_parallel_score_benchmark_prints_the_worker_ratio_and_peak_memory_for_each_image_set():
    # Six fresh interpreters, each importing torch: longer than run_benchmark's limit on a busy machine.
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "parallel_score.py"), "--images", "30", "60",
                           "--repeats", "1", "--batch-size", "8", "--mini-batch-size", "16"], capture_output=True,
                          text=True, timeout=400, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ratio worker / Score: " in done.stdout and "Merge Scored Parts: " in done.stdout
    assert "parallel worker peak RSS growth from 30 to 60 images: " in done.stdout
    rows = [line.split() for line in done.stdout.splitlines() if line.split()[:1] in (["30"], ["60"])]
    assert [row[0] for row in rows] == ["30", "60"] and all(float(row[3]) > 0 for row in rows)  # worker peak RSS MB
