"""gunicorn settings for the gateway (`gunicorn --config python:services.gateway.gunicorn_config`): its
logs, access lines included, as JSON lines (shared.logs). A logconfig_dict also turns the access log on."""

from shared.logs import logging_config

logconfig_dict = logging_config()
