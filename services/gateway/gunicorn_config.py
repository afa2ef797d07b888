"""gunicorn settings for the gateway, the one place they live: `collect up`, the Dockerfile, the compose file
and the Kubernetes manifests all run `gunicorn --config python:services.gateway.gunicorn_config
services.gateway.wsgi:app` and pass nothing else (options given on gunicorn's command line still win).

* The worker class is gthread with a header deadline and a body-stall timeout
  (services.gateway.worker.HeaderTimeoutWorker; HEADER_TIMEOUT_SECONDS, BODY_STALL_SECONDS).
* It listens on PORT (default 8000); GATEWAY_WORKERS processes (default 2) of 8 threads each.
* Its logs, access lines included, are JSON lines (shared.logs); a logconfig_dict also turns the access
  log on.
"""

from shared.config import Settings
from shared.logs import logging_config
from shared.metrics import mark_process_dead, prepare_multiprocess_dir

_settings = Settings.from_env()

bind = f"0.0.0.0:{_settings.port}"
worker_class = "services.gateway.worker.HeaderTimeoutWorker"
workers = _settings.gateway_workers
threads = 8
# Long enough for a large upload's body to arrive and be stored before the worker counts as hung.
timeout = 120
logconfig_dict = logging_config()
# /metrics adds up the worker processes (prometheus_client's multiprocess mode): set up before they fork.
prepare_multiprocess_dir()


def child_exit(server, worker) -> None:
    mark_process_dead(worker.pid)
