"""gunicorn settings for the gateway (`gunicorn --config python:services.gateway.gunicorn_config`): its
logs, access lines included, as JSON lines (shared.logs). A logconfig_dict also turns the access log on."""

from shared.logs import logging_config
from shared.metrics import mark_process_dead, prepare_multiprocess_dir

logconfig_dict = logging_config()
# /metrics adds up the worker processes (prometheus_client's multiprocess mode): set up before they fork.
prepare_multiprocess_dir()


def child_exit(server, worker) -> None:
    mark_process_dead(worker.pid)
