"""The command-line client: `collect upload`, `collect tasks`, `collect pause`, ... drive a gateway over HTTP.

It uses only the public API (the same one the dashboard and curl use) and imports nothing of the server,
so it runs on any machine that can reach the gateway."""
