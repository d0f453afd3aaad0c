"""Who may use an HTTP API, and how much they may send (docs/security.md).

``protect(app, rest, ...)`` puts the rules of ``RestSettings`` (``DFAST_REST_*``) in front of
a FastAPI app: the controller's, the reducer's, the debug worker's, the replay's.

* A request that changes something (any method but GET, HEAD and OPTIONS, except the POSTs
  an app names as reads) whose ``Origin`` is neither the page's own nor listed in
  ``DFAST_REST_CORS_ORIGINS`` gets 403 before its handler runs. Requests without ``Origin``
  pass: scripts, Sardana and dranspose 0.2's clients send none, and every browser sends one
  with a request a page of another origin makes (a form or ``fetch`` POST).
* With a token, those requests (with ``DFAST_REST_AUTH=all``: every request but the app's
  public paths) need ``Authorization: Bearer <token>``: 401 without one, 403 with a wrong
  one.
* A body larger than its endpoint's limit gets 413: at once when ``Content-Length`` says so,
  else as soon as the bytes read pass the limit (nothing more is read).
* CORS headers go to the listed origins only, without credentials: the token travels in a
  header the page sets, never in a cookie.
* A body that is not even UTF-8 text gets 400 saying so; text that is not the JSON an
  endpoint reads gets FastAPI's 422 naming the place (as before); never a 500.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dranspose_fast.errors import DransposeFastError
from dranspose_fast.runtime.settings import RestSettings

__all__ = ["BodyTooLarge", "RestGuard", "protect"]

#: Methods that only read; every other one changes something (unless an app says otherwise).
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Paths every app leaves open, so its API description can be read (no data in them).
DOCS = ("/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc")
#: FastAPI's words when a body cannot be parsed; replaced by what went wrong.
_PARSE_FAILED = "There was an error parsing the body"


class BodyTooLarge(HTTPException, DransposeFastError):
    """A request body passed its endpoint's limit (413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than this endpoint's limit of "
                              f"{limit} bytes (DFAST_REST_MAX_BODY, DFAST_REST_BODY_LIMITS)")


def _template(path: str) -> re.Pattern[str]:
    """A path template (``/api/v1/parameter/{name}``) as a pattern of the paths it serves."""
    parts = re.split(r"(\{[^}/]+\})", path)
    return re.compile("".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
                      + "$")


class RestGuard:
    """ASGI middleware applying one app's origin, token and body rules (module docstring).

    Parameters
    ----------
    app
        The app it guards.
    rest
        The settings (token, auth mode, origins, limits).
    public
        Paths open without a token even with ``DFAST_REST_AUTH=all``: exact paths (``/``
        too), or prefixes ending in ``/`` (``/static/``).
    reads
        Path templates of POST endpoints that only read (the reducer's ``select`` POST).
    large
        Path templates whose bodies may be large (``LARGE_BODY``: trigger maps, parameters).
    """

    def __init__(self, app: ASGIApp, rest: RestSettings, public: Sequence[str] = (),
                 reads: Sequence[str] = (), large: Sequence[str] = ()) -> None:
        self.app = app
        token = rest.token
        self.token = token.encode() if token is not None else None
        self.everything = rest.rest_auth == "all"
        self.origins = frozenset(rest.rest_cors_origins)
        self.exact = frozenset(p for p in (*public, *DOCS) if p == "/" or not p.endswith("/"))
        self.prefixes = tuple(p for p in public if p != "/" and p.endswith("/"))
        self.reads = [_template(t) for t in reads]
        templates = list(dict.fromkeys([*large, *rest.rest_body_limits]))
        self.limits = [(_template(t), rest.body_limit(t, large=t in large)) for t in templates]
        self.default_limit = int(rest.rest_max_body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = Headers(scope=scope)
        mutating = scope["method"] not in READ_METHODS and not any(
            p.match(path) for p in self.reads)
        refusal = self.refusal(path, scope["method"], mutating, headers)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        limit = self.limit(path)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            await _detail(BodyTooLarge(limit))(scope, receive, send)
            return
        await self.limited(limit, scope, receive, send)

    def refusal(self, path: str, method: str, mutating: bool,
                headers: Headers) -> Response | None:
        """The answer refusing a request before its handler, or ``None`` to let it pass."""
        origin = headers.get("origin")
        if mutating and origin is not None and not self.origin_allowed(origin, headers):
            return JSONResponse({"detail": f"cross-origin request from {origin} refused: the "
                                           "origin is not in DFAST_REST_CORS_ORIGINS"}, 403)
        if self.token is None or method == "OPTIONS":  # preflights carry no credentials
            return None
        if not mutating and (not self.everything or path in self.exact
                             or path.startswith(self.prefixes)):
            return None
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return JSONResponse({"detail": "a bearer token is required (Authorization: "
                                           "Bearer <token>)"}, 401,
                                headers={"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(given.strip().encode(), self.token):
            return JSONResponse({"detail": "the bearer token is not valid"}, 403,
                                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
        return None

    def origin_allowed(self, origin: str, headers: Headers) -> bool:
        """Whether a page of ``origin`` may change things: listed, or the server's own."""
        origin = origin.rstrip("/").lower()
        if origin in self.origins or "*" in self.origins:
            return True
        host = headers.get("host", "").lower()
        return origin != "null" and bool(host) and urlsplit(origin).netloc == host

    def limit(self, path: str) -> int:
        """Bytes a request body to ``path`` may have."""
        for pattern, limit in self.limits:
            if pattern.match(path):
                return limit
        return self.default_limit

    async def limited(self, limit: int, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app on a body that may not pass ``limit`` bytes while it is read."""
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge(limit)  # a 413 from the app's exception handling
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge as exc:  # read outside a handler (a middleware)
            if started:
                raise
            await _detail(exc)(scope, receive, send)


def _detail(exc: StarletteHTTPException) -> Response:
    return JSONResponse({"detail": exc.detail}, exc.status_code)


async def _unreadable(request: Request, exc: Exception) -> Response:
    """A body FastAPI could not read: 400 saying why (no 500 for bytes that are not JSON)."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    for error in errors:  # JSON that does not parse stays FastAPI's 422 "json_invalid"
        given = error.get("input")
        if error.get("type") == "json_invalid":
            # json.loads guesses UTF-16/32 from NUL bytes, so binary can get this far; the
            # error then carries no input and only the (cached) body says it was not text
            given = await request.body()
        if isinstance(given, bytes | bytearray) and not _is_text(given):
            return JSONResponse({"detail": "the body is not JSON (not even UTF-8 text): send "
                                           "a JSON document with Content-Type: "
                                           "application/json"}, 400)
    text = {bytes: lambda b: b[:200].decode("utf-8", "replace")}
    return JSONResponse({"detail": jsonable_encoder(errors, custom_encoder=text)}, 422)


def _is_text(data: bytes | bytearray) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


async def _http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer to an ``HTTPException``, saying why a body could not be parsed."""
    assert isinstance(exc, StarletteHTTPException)
    cause: Any = exc.__cause__
    if exc.status_code == 400 and exc.detail == _PARSE_FAILED and cause is not None:
        exc = StarletteHTTPException(400, f"the body cannot be read: {type(cause).__name__}: "
                                          f"{cause}")
    return await http_exception_handler(request, exc)


def protect(app: FastAPI, rest: RestSettings | None = None, *, public: Sequence[str] = (),
            reads: Sequence[str] = (), large: Sequence[str] = ()) -> RestSettings:
    """Guard ``app`` with ``rest`` (default: ``RestSettings()`` from the environment).

    Adds ``RestGuard`` (see there for ``public``, ``reads`` and ``large``), CORS for the
    listed origins, and the handlers that answer unreadable bodies with 400. Returns the
    settings used.

    Raises
    ------
    pydantic.ValidationError
        for invalid settings (the command line prints it in one line).
    """
    rest = rest if rest is not None else RestSettings()
    app.add_middleware(RestGuard, rest=rest, public=public, reads=reads, large=large)
    if rest.rest_cors_origins:  # outermost, so refusals carry CORS headers for listed pages
        app.add_middleware(CORSMiddleware, allow_origins=list(rest.rest_cors_origins),
                           allow_methods=["GET", "HEAD", "POST"],
                           allow_headers=["Authorization", "Content-Type"],
                           allow_credentials=False)
    app.add_exception_handler(RequestValidationError, _unreadable)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    return rest
