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


def test_the_flows_kafka_clients_hand_librdkafka_lines_to_the_omnirec_kafka_logger(capsys):
    """Through bytewax's own Kafka source and sink, built with the flow's settings: with no broker
    at the address, librdkafka's connection failures arrive as JSON lines of logger omnirec.kafka."""
    import threading

    from bytewax.connectors.kafka import KafkaSink

    from flows.dataflow import sink_config, source_config, watch_config
    from flows.kafka_source import RestingKafkaSource
    from omnirec.stack import free_port

    settings = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}", log_format="json")
    for config in (source_config(settings), sink_config(settings), watch_config(settings)):
        assert config["logger"] is logs.kafka_logger() is logging.getLogger("omnirec.kafka")

    arrived = threading.Event()

    class Arrived(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            arrived.set()

    kafka_log = logs.kafka_logger()
    handler = Arrived()
    kafka_log.addHandler(handler)
    logs.configure(settings.log_format, settings.log_level)
    try:
        source = RestingKafkaSource([settings.kafka_bootstrap], ["t.logs"], tail=True, starting_offset=-2,
                                    add_config=source_config(settings), batch_size=10, raise_on_errors=False,
                                    idle_poll_s=0.0)
        part = source.build_part("kafka_input", "0-t.logs", None)
        for _ in range(600):  # consume() serves the lines: read until one has arrived (at most ~30 s)
            part.next_batch()
            if arrived.wait(0.05):
                break
        part.close()
        from_source = arrived.is_set()

        arrived.clear()
        sink = KafkaSink([settings.kafka_bootstrap], "t.logs", add_config=sink_config(settings)).build("out", 0, 1)
        for _ in range(300):  # bytewax's sink partition polls its producer as it writes; so does this
            sink._producer.poll(0.1)
            if arrived.is_set():
                break
        from_sink = arrived.is_set()
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    finally:
        kafka_log.removeHandler(handler)
        root = logging.getLogger()
        for h in [h for h in root.handlers if h.get_name() == logs.HANDLER_NAME]:
            root.removeHandler(h)
    assert from_source and from_sink
    kafka_lines = [line for line in lines if line["logger"] == "omnirec.kafka"]
    assert kafka_lines and any(settings.kafka_bootstrap in line["message"] for line in kafka_lines), lines[:5]
    assert {"rdkafka#consumer", "rdkafka#producer"} <= {word.split("-")[0] for line in kafka_lines
                                                       for word in line["message"].replace("[", " ").split()}
