import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def untrained_run(tmp_path_factory):
    """One tiny untrained run directory (32 px images), shared by the tests that only load it."""
    from tests.helpers import write_untrained_run

    return write_untrained_run(tmp_path_factory.mktemp("untrained") / "run")
