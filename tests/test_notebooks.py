"""The notebooks: committed clean, and run top to bottom as users run them.

The fast tests read every notebook: outputs stripped, the install cell
first (and what it does in a clone, in Colab and where keras-tfm is
installed), the SMALL switch. The slow ones execute each notebook in a
fresh `python3` kernel with `KERAS_TFM_NOTEBOOK_SIZE=small`, in a
temporary working directory, within `TIME_LIMIT` seconds.
"""

import glob
import importlib.util
import os
import subprocess
import sys
import time

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            os.pardir, "notebooks")
NOTEBOOKS = sorted(glob.glob(os.path.join(NOTEBOOK_DIR, "*.ipynb")))
# Each notebook, SMALL, on the project's 2-core CPU machine.
TIME_LIMIT = 180
SIZE_VARIABLE = "KERAS_TFM_NOTEBOOK_SIZE"


def read(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    return notebook


def code_cells(notebook):
    return [cell for cell in notebook.cells if cell.cell_type == "code"]


def test_the_notebooks_are_the_three_user_paths():
    assert [os.path.basename(path) for path in NOTEBOOKS] == [
        "01_pretrain.ipynb",
        "02_export_and_serve.ipynb",
        "03_finetune.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_committed_without_outputs(path):
    notebook = read(path)
    for cell in code_cells(notebook):
        assert cell.outputs == [], f"outputs in: {cell.source[:60]!r}"
        assert cell.execution_count is None, cell.source[:60]
    for cell in notebook.cells:
        assert "execution" not in cell.metadata, cell.source[:60]
    assert notebook.metadata.kernelspec.name == "python3"


def run_install_cell(source, monkeypatch, tmp_path, installed, clone):
    """Runs the install cell's code with pip replaced by a recorder, in a
    working directory inside a clone (`../pyproject.toml`) or not; returns
    the pip commands it ran."""
    commands = []
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        if name == "keras_tfm" and not installed:
            return None
        return real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(subprocess, "check_call",
                        lambda command, **kwargs: commands.append(command))
    monkeypatch.setattr(sys, "path", list(sys.path))
    work = tmp_path / "repository" / "notebooks"
    work.mkdir(parents=True)
    if clone:
        (tmp_path / "repository" / "pyproject.toml").write_text("")
    monkeypatch.chdir(work)
    namespace = {}
    exec(compile(source, "install cell", "exec"), namespace)
    return commands, namespace


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_the_first_code_cell_installs_keras_tfm(path, monkeypatch, tmp_path):
    source = code_cells(read(path))[0].source
    # Where keras_tfm imports (here, or a second run in Colab): nothing.
    commands, namespace = run_install_cell(source, monkeypatch, tmp_path,
                                           installed=True, clone=True)
    assert commands == []
    repository = namespace["REPOSITORY"]
    assert repository == "https://github.com/keras-tfm/keras-tfm"


@pytest.mark.parametrize("clone", [True, False], ids=["clone", "colab"])
def test_the_install_cell_installs_the_clone_or_the_repository(
    clone, monkeypatch, tmp_path
):
    source = code_cells(read(NOTEBOOKS[0]))[0].source
    commands, namespace = run_install_cell(source, monkeypatch, tmp_path,
                                           installed=False, clone=clone)
    pip = [sys.executable, "-m", "pip", "install"]
    if clone:
        assert commands == [pip + ["-e", ".."]]
        # The clone is importable at once, without a restart.
        assert sys.path[0] == str(tmp_path / "repository")
    else:
        url = namespace["REPOSITORY"]
        assert commands == [pip + [f"keras-tfm @ git+{url}"]]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_every_notebook_installs_the_same_way(path):
    first = code_cells(read(NOTEBOOKS[0]))[0].source
    assert code_cells(read(path))[0].source == first


@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
@pytest.mark.parametrize("size, small", [
    (None, True), ("small", True), ("full", False),
])
def test_the_second_code_cell_is_the_small_switch(path, size, small,
                                                  monkeypatch):
    source = code_cells(read(path))[1].source
    assert "SMALL = True" in source
    if size is None:
        monkeypatch.delenv(SIZE_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(SIZE_VARIABLE, size)
    namespace = {}
    exec(compile(source, "settings cell", "exec"), namespace)
    assert namespace["SMALL"] is small


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=os.path.basename)
def test_notebook_runs_small(path, tmp_path, monkeypatch):
    notebook = read(path)
    # The kernel inherits the environment: SMALL, whatever the file says.
    monkeypatch.setenv(SIZE_VARIABLE, "small")
    client = NotebookClient(
        notebook,
        timeout=TIME_LIMIT,  # per cell; the whole is checked below
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    start = time.monotonic()
    client.execute()  # raises CellExecutionError at a failing cell
    seconds = time.monotonic() - start
    outputs = [output for cell in code_cells(notebook)
               for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("SMALL" in o.get("text", "") for o in outputs)
    # Every notebook draws at least one picture.
    assert any("image/png" in o.get("data", {}) for o in outputs)
    assert seconds < TIME_LIMIT, f"{os.path.basename(path)}: {seconds:.0f} s"
