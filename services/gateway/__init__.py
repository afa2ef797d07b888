"""The REST gateway: composes the services' HTTP resources into one Falcon WSGI app."""
