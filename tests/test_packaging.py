import glob
import os
import subprocess
import sys
import zipfile

import pytest

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)


@pytest.mark.slow
def test_wheel_installs_only_keras_tfm(tmp_path):
    # training/ and export/ hold thin scripts: they must not become generic
    # top-level modules in site-packages.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps",
         "--no-build-isolation", "-q", "-w", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = glob.glob(str(tmp_path / "*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {
        "keras_tfm", "keras_tfm-0.1.0.dist-info"
    }
    for preset in ("tiny", "small", "nano", "compute"):
        assert f"keras_tfm/configs/{preset}.json" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "keras-tfm = keras_tfm.cli:main" in zipfile.ZipFile(
        wheel).read(entry_points).decode()
