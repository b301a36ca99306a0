"""The one log format of the entry points (trainer.logs)."""

import io
import logging
import re

from trainer import logs


def test_one_line_per_record_with_utc_timestamp_level_and_logger(caplog):
    stream = io.StringIO()
    logs.configure(stream=stream)
    logs.configure(stream=stream)  # a second call replaces its own handler: no doubled lines
    try:
        logging.getLogger("trainer.job").info("sweep %d/%d", 1, 20)
        logging.getLogger("tensorflow").info("hidden unless verbose")
        logging.getLogger("tensorflow").warning("shown")
    finally:
        for handler in [h for h in logging.getLogger().handlers if getattr(h, "_wals2", False)]:
            logging.getLogger().removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2, lines
    pattern = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING) ([\w.]+): (.*)"
    assert [re.fullmatch(pattern, line).groups() for line in lines] == [
        ("INFO", "trainer.job", "sweep 1/20"),
        ("WARNING", "tensorflow", "shown"),
    ]
    assert "sweep 1/20" in caplog.text  # pytest's own handler is left in place
