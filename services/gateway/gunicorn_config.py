"""gunicorn settings for the gateway (`gunicorn --config python:services.gateway.gunicorn_config`): its
logs, access lines included, as JSON lines (shared.logs). A logconfig_dict also turns the access log on.

Containers (docker-compose.yml, deploy/k8s/) pass nothing else, so the gateway's server settings live here;
options given on gunicorn's command line still win over these."""

from shared.config import Settings
from shared.logs import logging_config

logconfig_dict = logging_config()

_settings = Settings.from_env()
bind = f"0.0.0.0:{_settings.port}"
worker_class = "gthread"
workers = _settings.gateway_workers
threads = 8
# Long enough for a large upload's body to arrive and be stored before the worker counts as hung.
timeout = 120
