"""What stands between a client and the models: the bearer token (resolved when the router starts, failing
closed), the request gate that checks the token and the body's size before the body is read, the rule that
refuses to serve without a token beyond this machine, and the breaker that stops calling a failing LLM.
No Ray, no FastAPI: tested as plain functions."""

from __future__ import annotations

import hmac
import ipaddress
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from raylib import RaylibError

TOKEN_ENV = "RAYLIB_SERVE_TOKEN"
TOKEN_FILE_ENV = "RAYLIB_SERVE_TOKEN_FILE"
# The largest request body read: 64 samples of 50 history titles of 300 characters fit in about 1.3 MB.
MAX_BODY_BYTES = 2 * 1024 * 1024
OPEN_PATHS = ("/healthz",)


def token_from_env(env: dict[str, str] | None = None) -> str | None:
    """The bearer token of this process: RAYLIB_SERVE_TOKEN, or the first line of the file RAYLIB_SERVE_TOKEN_FILE
    names; None when neither is set (auth off). A source that is set but empty, missing or unreadable is a
    RaylibError: a service never opens because its secret could not be read."""
    env = os.environ if env is None else env
    if TOKEN_ENV in env:
        token = env[TOKEN_ENV].strip()
        if not token:
            raise RaylibError(f"{TOKEN_ENV} is set but empty: set the token, or unset it to serve without one.")
        return token
    if TOKEN_FILE_ENV in env:
        path = Path(env[TOKEN_FILE_ENV]).expanduser()
        try:
            lines = path.read_text().strip().splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise RaylibError(f"{TOKEN_FILE_ENV}={path}: the token file cannot be read ({type(err).__name__}).")
        if not lines or not lines[0].strip():
            raise RaylibError(f"{TOKEN_FILE_ENV}={path}: the token file is empty.")
        return lines[0].strip()
    return None


_RESOLVED: dict[str, str | None] = {}  # this process's token, once resolved


def resolve_token() -> str | None:
    """Resolve this process's token now (the router, when its replica starts: a bad source fails the start) and
    keep it for `current_token`. Module state, not the router's: Serve ships the router class by value, so a
    global it set would be a copy the request gate never sees."""
    _RESOLVED["token"] = token_from_env()
    return _RESOLVED["token"]


def current_token() -> str | None:
    return _RESOLVED["token"] if "token" in _RESOLVED else resolve_token()


def check_token(header: str | None, token: str | None) -> bool:
    """True when no token is configured, or the `Authorization: Bearer <token>` header carries it."""
    if not token:
        return True
    if not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer "):].encode(), token.encode())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, has_token: bool, insecure: bool) -> None:
    """Refuse to serve without a token on an address other machines reach, unless the user says `insecure`."""
    if not is_loopback(host) and not has_token and not insecure:
        raise RaylibError(f"serving on {host} without a token: set {TOKEN_FILE_ENV} (or {TOKEN_ENV}) where the "
                          "router runs, or say --insecure to serve every endpoint open.")


def gate(path: str, method: str, headers: dict[str, str], token: str | None) -> tuple[int, str] | None:
    """What a request is refused with before its body is read (status, detail), or None: every path but
    /healthz needs the token; a body needs a Content-Length of at most MAX_BODY_BYTES."""
    if path in OPEN_PATHS:
        return None
    if not check_token(headers.get("authorization"), token):
        return 401, "missing or wrong bearer token"
    length = headers.get("content-length")
    if length is None:
        return (411, "a request body needs a Content-Length") if method in ("POST", "PUT", "PATCH") else None
    if not length.isdigit():
        return 400, f"Content-Length {length[:20]!r} is not a number"
    if int(length) > MAX_BODY_BYTES:
        return 413, f"the body is {int(length)} bytes; at most {MAX_BODY_BYTES} are read"
    return None


def safe_json(value: Any) -> bytes:
    """JSON any client input can be echoed in: NaN and infinities as strings, lone surrogates escaped."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return str(v)
        if isinstance(v, str):
            return v.encode("utf-8", "backslashreplace").decode("utf-8")
        if isinstance(v, dict):
            return {clean(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v if isinstance(v, (int, bool, type(None))) else str(v)

    return json.dumps(clean(value), allow_nan=False).encode()


class Breaker:
    """Stops calling a failing downstream for a while: after `failures` failed calls in a row it opens for
    `cooldown_s` (answers go around it at once), then lets calls try again."""

    def __init__(self, failures: int = 3, cooldown_s: float = 30.0, clock=time.monotonic):
        self.failures, self.cooldown_s, self.clock = failures, cooldown_s, clock
        self.in_a_row, self.opened_at = 0, None

    @property
    def open(self) -> bool:
        return self.opened_at is not None and self.clock() - self.opened_at < self.cooldown_s

    def record(self, ok: bool) -> None:
        if ok:
            self.in_a_row, self.opened_at = 0, None
            return
        self.in_a_row += 1
        if self.in_a_row >= self.failures:
            self.opened_at = self.clock()
