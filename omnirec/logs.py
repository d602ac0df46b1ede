"""Logging of the flow and the API: plain lines for a terminal, or one JSON object per line
(``OMNIREC_LOG_FORMAT=json``) for a log shipper (Loki, Elasticsearch, CloudWatch), with
``time``, ``level``, ``logger`` and ``message`` and whatever ``extra=`` a call site adds.

One configuration for both processes: ``configure`` is called where each starts (the flow's
``build_flow``, the API's app factory) and sets the root logger, so uvicorn's loggers follow it
too, and so do librdkafka's lines of every Kafka client, on the logger ``omnirec.kafka``
(``kafka_logger``, handed to confluent-kafka as the client setting ``logger``): the API's feedback
producer, and the flow's Kafka source, its two sinks and its broker watch's admin client (bytewax
passes ``add_config`` to confluent-kafka as it is: flows/dataflow.py ``source_config``,
``sink_config``, ``watch_config``). confluent-kafka hands a client's lines to the logger when the
client is polled: the source's at each read, a sink's when it next writes a batch, the admin
client's at each broker check (it logs at ``log_level`` 0, next to nothing).
"""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

HANDLER_NAME = "omnirec"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
KAFKA_LOGGER = "omnirec.kafka"


def kafka_logger() -> logging.Logger:
    """The logger of librdkafka's lines (the value of a confluent-kafka client's ``logger``)."""
    return logging.getLogger(KAFKA_LOGGER)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``OMNIREC_LOG_FORMAT`` ("text" or "json").

    >>> import json
    >>> record = logging.LogRecord("omnirec.flow", logging.WARNING, __file__, 1, "retry %d", (3,), None)
    >>> line = json.loads(formatter("json").format(record))
    >>> line["level"], line["logger"], line["message"]
    ('WARNING', 'omnirec.flow', 'retry 3')
    """
    if log_format == "json":
        return JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                             rename_fields={"asctime": "time", "levelname": "level", "name": "logger"})
    return logging.Formatter(TEXT_FORMAT)


def configure(log_format: str = "text", level: str = "INFO") -> None:
    """Send every logger's records to stderr in ``log_format``, at ``level`` and above."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(old)  # configured twice (tests build many apps): one handler, the last
    root.addHandler(handler)
    root.setLevel(level)
    # uvicorn's loggers keep handlers and a level of their own (its --log-level) unless told
    # otherwise: hand them to the root, so OMNIREC_LOG_LEVEL and the format hold for them too.
    # A logger uvicorn switched off (the access log under --no-access-log: no handler, no
    # propagation) stays off: uvicorn logs every request once the access logger has a handler.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_log = logging.getLogger(name)
        wanted = bool(uvicorn_log.handlers) or uvicorn_log.propagate
        uvicorn_log.handlers.clear()
        uvicorn_log.setLevel(logging.NOTSET)
        uvicorn_log.propagate = wanted
        uvicorn_log.disabled = False
