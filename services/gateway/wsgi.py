"""The WSGI entry point for gunicorn: `gunicorn services.gateway.wsgi:app`."""

from services.gateway.app import create_app
from shared.runtime import runtime

_rt = runtime()
app = create_app(_rt.db, _rt.broker, _rt.settings)
