"""The README's Python examples run as written (shrunk to a few steps)."""

import os
import re

import pytest

README = os.path.join(os.path.dirname(__file__), os.pardir, "README.md")


def python_blocks():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## From Python (Colab)"):]
    section = section[: section.index("\n## ", 5)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


@pytest.mark.slow
def test_colab_examples_run(tmp_path, monkeypatch):
    # In an empty directory: the examples need no file of their own.
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks()
    assert len(blocks) == 2
    shrunk = [
        blocks[0].replace("steps_per_epoch=200, epochs=2",
                          "steps_per_epoch=3, epochs=1"),
        blocks[1].replace('output_dir="runs/t"',
                          'output_dir="runs/t", max_steps=4, eval_every=2, '
                          "verbose=0"),
    ]
    assert shrunk != blocks  # the shrinking applied
    namespace = {}
    for block in shrunk:
        exec(compile(block, "README.md", "exec"), namespace)
    assert os.path.isfile("model.keras")
    assert namespace["metrics"]["steps"] == 4


def test_readme_has_no_placeholders():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    assert "TBD" not in text
