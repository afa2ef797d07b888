"""Where the client finds its gateway and API key: a flag, else the environment, else `collect login`'s file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import click

from services.client.errors import ClientError, ExitCode

DEFAULT_URL = "http://localhost:8000"
URL_ENV = "COLLECT_URL"
KEY_ENV = "COLLECT_API_KEY"


@dataclass(frozen=True)
class ClientConfig:
    url: str
    api_key: str | None


def login_path() -> Path:
    """The file `collect login` writes: config.json in the user's config directory for `collect`
    ($XDG_CONFIG_HOME/collect, by default ~/.config/collect, on Linux)."""
    return Path(click.get_app_dir("collect")) / "config.json"


def load_login(path: Path) -> dict[str, str]:
    """The stored `url` and `api_key` (either may be missing); {} when nobody logged in."""
    try:
        stored = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ClientError(f"cannot read {path}: {exc}; run `collect login` again", ExitCode.USAGE) from None
    return stored if isinstance(stored, dict) else {}


def save_login(path: Path, url: str, api_key: str) -> None:
    """Store the URL and key in a file only its owner can read or write (0600), replacing any earlier one
    at once (never a half-written file, never a moment in which the key is readable by others)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkstemp creates the file with mode 0600 before a byte of the key is written.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as file:
            json.dump({"url": url, "api_key": api_key}, file)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def resolve(url_flag: str | None, key_flag: str | None, env: Mapping[str, str] | None = None,
            path: Path | None = None) -> ClientConfig:
    """Each of the URL and the key from its flag, else its environment variable, else the login file; the URL
    defaults to http://localhost:8000. The login file is read only when a flag and a variable are missing, and
    its key is used only for the server it was stored for: a URL from a flag or the environment that names
    another server never receives it."""
    env = os.environ if env is None else env
    url = url_flag or env.get(URL_ENV)
    api_key = key_flag or env.get(KEY_ENV)
    if not url or not api_key:
        stored = load_login(path or login_path())
        stored_url = (stored.get("url") or "").rstrip("/")
        url = url or stored_url
        if not api_key and stored_url and (url or DEFAULT_URL).rstrip("/") == stored_url:
            api_key = stored.get("api_key")
    url = (url or DEFAULT_URL).rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ClientError(f"the server URL must start with http:// or https://, got {url!r}", ExitCode.USAGE)
    return ClientConfig(url, api_key or None)
