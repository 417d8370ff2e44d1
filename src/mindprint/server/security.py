"""What every request passes before a route sees it, and the headers that limit what a served
page may do.

* Host check (loopback binding): a foreign site whose DNS name resolves to 127.0.0.1 (DNS
  rebinding) sends its own name in ``Host``; only ``localhost``, ``127.0.0.1``, ``::1`` and the
  bound host are answered.
* Token (every ``/api`` and ``/v1`` path, the event stream included, when the server has one;
  always when bound to a non-loopback address): ``X-Mindprint-Token``, ``Authorization: Bearer TOKEN`` or
  ``?token=`` (links and EventSource cannot set headers), compared in constant time.
* Cross-origin writes: a non-GET ``/api`` or ``/v1`` request whose ``Origin`` is neither the server's own
  nor one of ``--cors-origin`` is refused; CORS itself is closed unless origins are given.
* Headers: pages are never cached (a new version shows at once); a report served from a job's
  directory may not run scripts (its HTML embeds model output); no response may be shown in a
  frame of another site (``X-Frame-Options: DENY``, CSP ``frame-ancestors 'none'``).

Upload limits and file-name rules belong to the upload route (:mod:`.routes.datasets`).
"""

from __future__ import annotations

import hmac
import ipaddress

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
NO_STORE = {"Cache-Control": "no-store"}
# the event stream: no caching, and no buffering by a reverse proxy (events must arrive at once)
STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
REPORT_HEADERS = {"Content-Security-Policy": "script-src 'none'"}
# no page of this server may be framed by another site (clickjacking a Delete button)
FRAME_HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff"}
FRAME_CSP = "frame-ancestors 'none'"
TOKEN_COOKIE = "mindprint_token"
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def api_error(status: int, detail: str, **extra) -> JSONResponse:
    return JSONResponse({"detail": detail, **extra}, status_code=status)


def request_hostname(request: Request) -> str:
    """The host name of the ``Host`` header, without port or IPv6 brackets, lower-cased."""
    header = request.headers.get("host") or ""
    if header.startswith("["):
        return header.split("]")[0].strip("[").lower()
    return header.rsplit(":", 1)[0].strip("[]").lower()


def given_token(request: Request) -> str:
    given = request.headers.get("x-mindprint-token") or ""
    auth = request.headers.get("authorization") or ""
    if auth.lower().startswith("bearer "):
        given = given or auth[7:].strip()
    return (given or request.query_params.get("token", "")
            or request.cookies.get(TOKEN_COOKIE, ""))


def token_ok(given: str, token: str | None) -> bool:
    return bool(token) and bool(given) and hmac.compare_digest(given.encode(), token.encode())


def refusal(request: Request, *, host: str, token: str | None,
            cors_origins: list[str]) -> JSONResponse | None:
    """The error response for a request that fails a check, or None to let it through."""
    if is_loopback(host):
        hostname = request_hostname(request)
        if hostname not in LOOPBACK_NAMES and hostname != host:
            return api_error(403, f"host '{hostname}' is not allowed (this server answers "
                             "to localhost only)")
    if not request.url.path.startswith(("/api", "/v1")):
        return None
    if token:
        given = given_token(request)
        if not given:
            return api_error(401, "missing token: send 'Authorization: Bearer TOKEN' (the "
                             "token mindprint serve printed at start)")
        if not token_ok(given, token):
            return api_error(403, "wrong token")
    origin = request.headers.get("origin")
    if request.method not in _SAFE_METHODS and origin:
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin != own and origin not in cors_origins:
            return api_error(403, f"cross-origin request from {origin} refused")
    return None


def install(app: FastAPI, *, host: str, token: str | None, cors_origins: list[str] | None) -> None:
    """CORS (only for the given origins) and the checks above, on every request."""
    origins = list(cors_origins or [])
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["*"],
                           allow_headers=["*"])

    @app.middleware("http")
    async def guard(request: Request, call_next):
        refused = refusal(request, host=host, token=token, cors_origins=origins)
        response = refused if refused is not None else await call_next(request)
        response.headers.update(FRAME_HEADERS)
        csp = response.headers.get("content-security-policy")
        response.headers["Content-Security-Policy"] = f"{csp}; {FRAME_CSP}" if csp else FRAME_CSP
        return response
