import logging
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the entry points' packages, also when the tests run from another directory

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from trainer import environment  # noqa: E402  (the standard library only)

environment.set_defaults()  # TensorFlow in the tests runs as in the entry points (oneDNN on)

import pytest  # noqa: E402

SHARED_DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _restore_logging():
    """Entry points called in-process configure the root logger (``trainer.logs``); each test gets it back as
    it was, so that no test sees another's level or handlers."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    quiet = {name: logging.getLogger(name).level for name in ("absl", "tensorflow")}
    yield
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)
    root.setLevel(level)
    for name, old in quiet.items():
        logging.getLogger(name).setLevel(old)


def shared_file(*parts: str) -> pathlib.Path:
    """A file under ../shared/data, or a clean skip saying it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (MovieLens files are read from ../shared/data, never shipped)")
    return path


def pytest_collection_modifyitems(config, items):
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        return
    skip = pytest.mark.skip(reason="no GPU visible")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
