"""gunicorn settings for the gateway (`gunicorn --config python:services.gateway.gunicorn_config`): its
logs, access lines included, as JSON lines (shared.logs). A logconfig_dict also turns the access log on.

Containers (docker-compose.yml, deploy/k8s/) pass nothing else, so the gateway's server settings live here;
options given on gunicorn's command line still win over these."""

import os

from shared.logs import logging_config

logconfig_dict = logging_config()

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
worker_class = "gthread"
workers = int(os.environ.get("GATEWAY_WORKERS", "2"))
threads = 8
# Long enough for a large upload's body to arrive and be stored before the worker counts as hung.
timeout = 120
