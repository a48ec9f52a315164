import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import pytest  # noqa: E402

import keras_tfm  # noqa: E402, F401  (registers the layers; quiet TF start)

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
# Real data beside the repository, used for extra coverage when present.
SHARED_DATA = os.path.abspath(
    os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "shared",
                 "data")
)


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1337)


@pytest.fixture(scope="session")
def shakespeare_path():
    """About 100 KB of Shakespeare, shipped in tests/fixtures."""
    return os.path.join(FIXTURES, "shakespeare.txt")


@pytest.fixture(scope="session")
def shakespeare_text(shakespeare_path):
    with open(shakespeare_path, encoding="utf-8") as f:
        return f.read()


def shared_data(*parts):
    """A path under ../shared/data, or skip the test if it is absent."""
    path = os.path.join(SHARED_DATA, *parts)
    if not os.path.exists(path):
        pytest.skip(f"optional data not present: {path}")
    return path
