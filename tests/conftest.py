import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras_tfm  # noqa: E402, F401  (registers the layers; quiet TF start)

import keras  # noqa: E402
import pytest  # noqa: E402

SHARED_DATA = os.path.join(
    os.path.dirname(__file__), os.pardir, os.pardir, "shared", "data"
)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1337)


@pytest.fixture(scope="session")
def shakespeare_path():
    path = os.path.abspath(
        os.path.join(SHARED_DATA, "tinyshakespeare", "input.txt")
    )
    if not os.path.isfile(path):
        pytest.fail(f"test data missing: {path} (../shared/data beside the repo)")
    return path


@pytest.fixture(scope="session")
def shakespeare_text(shakespeare_path):
    with open(shakespeare_path, encoding="utf-8") as f:
        return f.read()
