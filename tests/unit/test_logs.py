"""OMNIREC_LOG_FORMAT=json makes every process log one JSON object per line, uvicorn's included."""

from __future__ import annotations

import json
import logging

from omnirec import logs
from omnirec.settings import Settings


def test_json_logs_are_one_object_per_line_for_our_loggers_and_uvicorns(capsys):
    settings = Settings(log_format="json", log_level="INFO")
    try:
        logs.configure(settings.log_format, settings.log_level)
        logs.configure(settings.log_format, settings.log_level)  # twice: still one line per record
        logging.getLogger("omnirec.flow.redis").warning("Redis write failed, retrying in %.1f s", 0.4)
        logging.getLogger("uvicorn.error").info("Started server process")
        logging.getLogger("omnirec.api").debug("below the level")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:  # leave no handler on capsys's stream behind
        root = logging.getLogger()
        for handler in [h for h in root.handlers if h.get_name() == logs.HANDLER_NAME]:
            root.removeHandler(handler)
    assert [(line["level"], line["logger"], line["message"]) for line in lines] == [
        ("WARNING", "omnirec.flow.redis", "Redis write failed, retrying in 0.4 s"),
        ("INFO", "uvicorn.error", "Started server process")]
    assert all("time" in line for line in lines)


def test_an_unknown_log_format_is_refused():
    try:
        Settings(log_format="xml")
    except ValueError as exc:
        assert "log_format" in str(exc)
    else:
        raise AssertionError("xml accepted")


def test_an_access_log_uvicorn_switched_off_stays_off():
    access = logging.getLogger("uvicorn.access")
    access.handlers.clear()
    access.propagate = False  # what uvicorn's --no-access-log (access_log=False) leaves
    try:
        logs.configure("json", "INFO")
        assert not access.hasHandlers()  # uvicorn logs each request only if it has one
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if h.get_name() == logs.HANDLER_NAME]:
            root.removeHandler(handler)
