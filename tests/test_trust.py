"""What trusting a model folder means, as the docs say: MLflow runs the folder's code; our readers never do."""

from __future__ import annotations

import shutil
import subprocess
import sys

from conftest import REPO

_MARK = "import pathlib; pathlib.Path({path!r}).write_text('ran')\n"


def _tampered(transformed_model, tmp_path):
    """The trained folder with a line in mlflow_entry.py and in its bundled package that leaves a file when run."""
    folder = tmp_path / "model"
    shutil.copytree(transformed_model / "model", folder)
    marks = {name: tmp_path / f"{name}.ran" for name in ("entry", "code")}
    entry = folder / "mlflow_entry.py"
    entry.write_text(_MARK.format(path=str(marks["entry"])) + entry.read_text())
    (init,) = folder.glob("code/*/__init__.py")
    init.write_text(_MARK.format(path=str(marks["code"])) + init.read_text())
    return folder, marks


def test_score_never_runs_a_model_folders_code_but_mlflow_does(transformed_model, tmp_path):
    folder, marks = _tampered(transformed_model, tmp_path)
    score = subprocess.run([sys.executable, "-m", "designer_resnet.components.score_image_model", "--trained_model",
                            str(folder), "--dataset", str(transformed_model / "test_tf"), "--scored_dataset",
                            str(tmp_path / "scored")], capture_output=True, text=True, timeout=300)
    assert score.returncode == 0, score.stderr[-2000:]
    assert not marks["entry"].exists() and not marks["code"].exists()
    load = subprocess.run([sys.executable, "-c", f"import mlflow.pyfunc; mlflow.pyfunc.load_model({str(folder)!r})"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert load.returncode == 0, load.stderr[-2000:]
    assert marks["entry"].exists()  # MLflow's "models from code": loading runs the folder's Python


def test_the_docs_say_what_loading_through_mlflow_runs():
    for doc in (REPO / "README.md", REPO / "docs" / "formats.md"):
        text = " ".join(doc.read_text().split())
        assert "mlflow_entry.py" in text and "`code/`" in text and "weights_only=True" in text
        assert "as you would trust a Python package" in text or "as you would a Python package" in text, doc
