"""Settings of the command-line client (`engine submit`, `engine orders`, ...), from the environment.

The client talks to a running engine over its public API; all it needs is where the
engine is and, where keys are configured, which key to use.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import urlparse

from config.settings import ConfigError, read_dotenv

CLIENT_VARIABLES: dict[str, str] = {
    "ENGINE_URL": "the engine's address, instead of --url (default http://localhost:$PORT)",
    "PORT": "the port of the default URL (default 8000), as `engine run` reads it",
    "ENGINE_API_KEY": "the API key, sent as `Authorization: Bearer` (where the engine has API_KEYS)",
    "ENGINE_ADMIN_KEY": "the operator key `engine admin` sends instead (one of the engine's ADMIN_KEYS)",
}


@dataclass(frozen=True)
class ClientSettings:
    """Where the engine is and the key to use."""

    url: str
    api_key: str | None = None
    admin_key: str | None = None


def load_client_settings(environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env"),
                         url: str | None = None) -> ClientSettings:
    """ClientSettings from `--url` (if given), else ENGINE_URL, else http://localhost:$PORT; raise ConfigError."""
    env: dict[str, str] = {}
    if dotenv is not None:
        env.update(read_dotenv(dotenv))
    env.update(os.environ if environ is None else environ)
    if not url:
        url = env.get("ENGINE_URL", "").strip()
    if not url:
        port = env.get("PORT", "").strip() or "8000"
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError(f"PORT must be a port number (1-65535), got {port!r}")
        url = f"http://localhost:{port}"
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"the engine URL must be http:// or https://host[:port], got {url!r} "
                          "(--url or ENGINE_URL)")
    return ClientSettings(url=url.rstrip("/"), api_key=env.get("ENGINE_API_KEY", "").strip() or None,
                          admin_key=env.get("ENGINE_ADMIN_KEY", "").strip() or None)
