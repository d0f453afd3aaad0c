"""Settings of every component, from the environment (the names of dranspose 0.2).

Timing intervals are settings too (``DFAST_*``), so tests run them short. The security
settings (``DFAST_REST_*``, ``DFAST_RESULT_CLASSES``, ``DFAST_DUMP_ROOT``) are described in
docs/security.md.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import socket
import string
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import (
    AliasChoices,
    ByteSize,
    Field,
    RedisDsn,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_core import Url
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from dranspose_fast.errors import DransposeFastError
from dranspose_fast.helpers.safe_pickle import parse_class_names
from dranspose_fast.protocol import (
    GENERIC_WORKER,
    IngesterName,
    StreamName,
    WorkerName,
    WorkerTag,
    ZmqUrl,
)
from dranspose_fast.runtime.curve import CurveSettings


class SettingsError(DransposeFastError, ValueError):
    """Settings that do not fit together; the message names the setting to choose."""


def redact_url(url: str) -> str:
    """``url`` with its password (and any ``*password*`` query value) replaced by ``***``.

    For every place a ``REDIS_URL`` is logged or shown; the user name, host, port, database
    and TLS options stay, so the message still says which server it was.
    """
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}:***@{hostport}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any("password" in key.lower() for key, _ in pairs):
        query = urlencode([(k, "***" if "password" in k.lower() else v) for k, v in pairs],
                          safe="/*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (as written in a URL) names this machine's loopback interface.

    Literal only, no name lookup: ``localhost`` (and ``*.localhost``, RFC 6761), 127.0.0.0/8
    and ``::1``.  A name that merely resolves to loopback does not count.
    """
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_bind(value: object) -> object:
    """A bind setting is a host, an address, ``*`` or an interface name: never a URL or port."""
    if not isinstance(value, str):
        return value
    value = value.strip()
    if not value:
        return None  # ``INGESTER_BIND=`` is unset
    if "/" in value:
        raise ValueError(f"{value!r} is a URL: give a host or address only (e.g. 0.0.0.0)")
    if ":" in value:
        try:
            ipaddress.IPv6Address(value.strip("[]"))
        except ValueError:
            raise ValueError(f"{value!r}: give a host or address only, the port is the "
                             "URL's") from None
    return value


def bind_address(url: Url, bind: str | None, setting: str, url_setting: str) -> str:
    """The ZeroMQ address a component advertised at ``url`` binds (docs/deployment.md).

    Parameters
    ----------
    url : Url
        What peers are told (``INGESTER_URL``, ``REDUCER_URL``); its port is the one bound.
    bind : str or None
        The bind setting: a host, an address, ``0.0.0.0``/``*`` (every interface) or an
        interface name.  ``None``: the URL's host if it is loopback (``localhost`` binds
        127.0.0.1).
    setting, url_setting : str
        The environment names of both settings, for the message of a refusal.

    Returns
    -------
    str
        ``tcp://<host>:<port>``; an ``ipc://`` or ``inproc://`` URL as it is.

    Raises
    ------
    SettingsError
        ``bind`` is unset and the URL's host is not loopback: listening on every interface
        is never chosen for the user (one line, naming ``setting``).
    """
    if url.scheme != "tcp":
        return str(url)
    host = url.host or ""
    if bind is None:
        if not _is_loopback(host):
            raise SettingsError(
                f"{url_setting}={url} is not a loopback address: set {setting} to the "
                "address to listen on (0.0.0.0 for every interface)")
        # a name binds the IPv4 loopback, which a worker dialling ``localhost`` reaches
        bare = host.strip("[]").lower()
        bind = "127.0.0.1" if bare == "localhost" or bare.endswith(".localhost") else host
    elif ":" in bind and not bind.startswith("["):
        bind = f"[{bind}]"
    return f"tcp://{bind}:{url.port}"


class DistributedSettings(CurveSettings):
    """Settings every component shares (``CurveSettings``: the data sockets' keys)."""

    # a REDIS_URL that does not validate holds a password: errors name the field, not the value
    model_config = SettingsConfigDict(extra="ignore", hide_input_in_errors=True)

    redis_dsn: RedisDsn = Field(
        RedisDsn("redis://localhost:6379/0"),
        validation_alias=AliasChoices("redis_url", "service_redis_dsn", "redis_dsn"),
    )
    build_meta_file: str | None = "/etc/build_git_meta.json"
    config_ttl: float = Field(10.0, gt=0, validation_alias=AliasChoices("dfast_config_ttl"))
    config_interval: float = Field(
        1.3, gt=0, validation_alias=AliasChoices("dfast_config_interval")
    )
    #: Freed memory a process keeps for the next frames (``dranspose_fast.runtime.heap``); 0:
    #: glibc's defaults, which fault in fresh pages for every frame of 128 KiB or more.
    heap_keep_bytes: int = Field(
        1 << 30, ge=0, validation_alias=AliasChoices("dfast_heap_keep_bytes")
    )
    #: Port of the ``/metrics`` server of a worker or an ingester (docs/metrics.md); unset or
    #: 0: none. The controller and the reducer serve ``/metrics`` on their HTTP port.
    metrics_port: int | None = Field(
        None, ge=0, le=65535, validation_alias=AliasChoices("dfast_metrics_port")
    )
    #: Address the metrics server binds (loopback unless told otherwise; 0.0.0.0 in a pod).
    metrics_host: str = Field(
        "127.0.0.1", validation_alias=AliasChoices("dfast_metrics_host")
    )
    #: ``DFAST_LOCAL_HOP``: workers on an ingester's host connect over ``ipc://``
    #: (``runtime.local_hop``); off on either side keeps every hop on TCP.
    local_hop: bool = Field(True, validation_alias=AliasChoices("dfast_local_hop"))
    #: The directory dumps (``dump_prefix``) must stay in; unset: the component's current
    #: directory.
    dump_root: Path | None = Field(None, validation_alias=AliasChoices("dfast_dump_root"))

    def dump_path_problem(self, path: str) -> str | None:
        """Why no file may be written at ``path`` (``None``: it may): it resolves (symbolic
        links followed) outside ``dump_root``, or it holds a NUL byte."""
        if "\x00" in path:
            return f"{path!r} holds a NUL byte"
        root = Path(self.dump_root if self.dump_root is not None else os.getcwd()).resolve()
        target = Path(path).resolve()
        if target != root and root not in target.parents:
            return (f"{path!r} resolves to {target}, outside the dump root {root} "
                    "(DFAST_DUMP_ROOT; unset: the current directory)")
        return None


#: Bounds of ``DFAST_RETENTION_EVENTS`` when it is not 0: at least one default credit window;
#: at most the span of events behind a worker's latest result in which the reducer drops
#: duplicates (``reducer.service.DEDUP_SPAN``).
RETENTION_MIN_EVENTS = 256
RETENTION_MAX_EVENTS = 1 << 17


def random_worker_name() -> WorkerName:
    suffix = "".join(random.choices(string.ascii_letters, k=10))
    return WorkerName(f"Worker-{socket.gethostname()}-{suffix}")


class WorkerSettings(DistributedSettings):
    worker_class: str | None = None
    worker_name: WorkerName = Field(default_factory=random_worker_name)
    worker_tags: set[WorkerTag] = {GENERIC_WORKER}
    credit_window: int = Field(256, ge=1, validation_alias=AliasChoices("dfast_credit_window"))


def _names(value: object) -> object:
    """A list setting from the environment: a JSON list, or comma-separated text."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


class ResultSettings(BaseSettings):
    """``DFAST_RESULT_CLASSES``: the classes results may hold beside plain data and numpy,
    ``module:Name`` each, comma-separated (or a JSON list); read by the reducer and replay."""

    model_config = SettingsConfigDict(extra="ignore")

    result_classes: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=AliasChoices("dfast_result_classes", "result_classes"))

    @field_validator("result_classes", mode="before")
    @classmethod
    def _class_names(cls, value: object) -> object:
        names = _names(value)
        return parse_class_names(names) if isinstance(names, list | tuple) else names


class ReducerSettings(DistributedSettings, ResultSettings):
    reducer_url: ZmqUrl = Url("tcp://localhost:10200")
    reducer_class: str | None = None
    #: ``REDUCER_BIND``: where the results socket listens (a host, an address, ``0.0.0.0``
    #: for every interface); the port is ``reducer_url``'s.  Unset: ``reducer_url``'s host
    #: when it is loopback, else the reducer refuses to start (``bind_address``).
    reducer_bind: str | None = None

    _bind = field_validator("reducer_bind", mode="before")(_check_bind)

    def bind_address(self) -> str:
        """The address the results socket binds (``bind_address``)."""
        return bind_address(self.reducer_url, self.reducer_bind, "REDUCER_BIND", "REDUCER_URL")


class IngesterSettings(DistributedSettings):
    ingester_streams: list[StreamName]
    ingester_name: IngesterName = IngesterName("")
    ingester_url: ZmqUrl = Url("tcp://localhost:10000")
    dump_path: str | None = None
    #: ``INGESTER_BIND``: where the ROUTER listens (a host, an address, ``0.0.0.0`` for every
    #: interface); the port is ``ingester_url``'s.  Unset: ``ingester_url``'s host when it is
    #: loopback, else the ingester refuses to start (``bind_address``).
    ingester_bind: str | None = None
    #: ``DFAST_INGESTER_IO_THREADS``: libzmq I/O threads of the ingester (they receive the
    #: upstream frames and send, with CURVE encrypt, the workers' batches).
    ingester_io_threads: int = Field(
        2, ge=1, le=64, validation_alias=AliasChoices("dfast_ingester_io_threads"))

    #: ``DFAST_RETENTION_EVENTS``: events the ingester keeps after sending them, until they
    #: are processed and reduced, so a lost worker's events can be resent (docs/protocol.md);
    #: 0: none. At most ``RETENTION_MAX_EVENTS``, the span the reducer checks for duplicates.
    retention_events: int = Field(
        65536, ge=0, le=RETENTION_MAX_EVENTS,
        validation_alias=AliasChoices("dfast_retention_events"))
    #: ``DFAST_RETENTION_BYTES``: the same window's bound in bytes; when either is reached the
    #: ingester routes no more frames until some are released (back-pressure upstream).
    retention_bytes: int = Field(
        1 << 30, ge=0, validation_alias=AliasChoices("dfast_retention_bytes"))

    _bind = field_validator("ingester_bind", mode="before")(_check_bind)

    @model_validator(mode="after")
    def _retention_window(self) -> IngesterSettings:
        if self.retention_events and self.retention_events < RETENTION_MIN_EVENTS:
            raise ValueError(
                f"DFAST_RETENTION_EVENTS={self.retention_events} is below "
                f"{RETENTION_MIN_EVENTS} (one default credit window); 0 turns retention off")
        if self.retention_events and self.retention_bytes < 1 << 20:
            raise ValueError(f"DFAST_RETENTION_BYTES={self.retention_bytes} is below 1 MiB "
                             "while retention is on (DFAST_RETENTION_EVENTS > 0)")
        return self

    def bind_address(self) -> str:
        """The address the ROUTER binds (``bind_address``)."""
        return bind_address(self.ingester_url, self.ingester_bind, "INGESTER_BIND",
                            "INGESTER_URL")

    @field_validator("dump_path", mode="before")
    @classmethod
    def _fspath(cls, value: object) -> object:
        """0.2 accepts ``dump_path=Path(...)``; kept as text here."""
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    @model_validator(mode="after")
    def _default_name(self) -> IngesterSettings:
        if not self.ingester_name:
            self.ingester_name = IngesterName("_".join(self.ingester_streams) + "-ingester")
        return self


#: Body limits of the endpoints that carry data (trigger maps, parameter values such as
#: detector masks); every other endpoint has ``rest_max_body``.
LARGE_BODY = 512 << 20


class RestSettings(BaseSettings):
    """Who may use the HTTP APIs of the controller, reducer, debug worker and replay
    (docs/security.md).

    ``DFAST_REST_TOKEN`` or ``DFAST_REST_TOKEN_FILE`` (a file holding it, as a Kubernetes
    secret mounts it) sets a bearer token; ``DFAST_REST_AUTH`` says which requests need it:
    ``mutating`` (default: every request that changes something) or ``all``.
    ``DFAST_REST_CORS_ORIGINS`` lists the web origins allowed to call the API from a browser
    (default: none but the page's own). ``DFAST_REST_MAX_BODY`` limits request bodies
    (default 1 MiB), ``DFAST_REST_BODY_LIMITS`` (a JSON object, path template to size) per
    endpoint; sizes are bytes or text such as ``512MiB``.
    """

    model_config = SettingsConfigDict(extra="ignore")

    rest_token: SecretStr | None = Field(None, validation_alias=AliasChoices("dfast_rest_token"))
    rest_token_file: Path | None = Field(
        None, validation_alias=AliasChoices("dfast_rest_token_file"))
    rest_auth: Literal["mutating", "all"] = Field(
        "mutating", validation_alias=AliasChoices("dfast_rest_auth"))
    rest_cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=AliasChoices("dfast_rest_cors_origins"))
    rest_max_body: ByteSize = Field(
        ByteSize(1 << 20), ge=0, validation_alias=AliasChoices("dfast_rest_max_body"))
    rest_body_limits: dict[str, ByteSize] = Field(
        default_factory=dict, validation_alias=AliasChoices("dfast_rest_body_limits"))

    @field_validator("rest_cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: object) -> object:
        origins = _names(value)
        if isinstance(origins, list | tuple):
            for origin in origins:
                if origin != "*" and (not isinstance(origin, str) or origin.count("/") != 2
                                      or not origin.startswith(("http://", "https://"))):
                    raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], "
                                     "no path) or *")
            return tuple(o.rstrip("/").lower() for o in origins)
        return origins

    @field_validator("rest_body_limits")
    @classmethod
    def _paths(cls, value: dict[str, ByteSize]) -> dict[str, ByteSize]:
        for path in value:
            if not path.startswith("/"):
                raise ValueError(f"{path!r} is not a path (it starts with /)")
        return value

    @field_validator("rest_token")
    @classmethod
    def _not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("DFAST_REST_TOKEN is empty")
        return value

    @model_validator(mode="after")
    def _one_token(self) -> RestSettings:
        if self.rest_token is not None and self.rest_token_file is not None:
            raise ValueError("set DFAST_REST_TOKEN or DFAST_REST_TOKEN_FILE, not both")
        if self.rest_token_file is not None:
            try:
                text = self.rest_token_file.read_text().strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"DFAST_REST_TOKEN_FILE {self.rest_token_file}: cannot read "
                                 f"it ({exc})") from None
            if not text:
                raise ValueError(f"DFAST_REST_TOKEN_FILE {self.rest_token_file} is empty")
            self.rest_token = SecretStr(text)
        if self.rest_auth == "all" and self.rest_token is None:
            raise ValueError("DFAST_REST_AUTH=all needs DFAST_REST_TOKEN or "
                             "DFAST_REST_TOKEN_FILE")
        return self

    @property
    def token(self) -> str | None:
        """The bearer token (``None``: no authentication)."""
        return None if self.rest_token is None else self.rest_token.get_secret_value().strip()

    def body_limit(self, template: str, large: bool = False) -> int:
        """Bytes a request body to the endpoint ``template`` may have."""
        found = self.rest_body_limits.get(template)
        if found is not None:
            return int(found)
        return LARGE_BODY if large else int(self.rest_max_body)


class CliSettings(BaseSettings):
    """``LOG_LEVEL``: DEBUG, INFO (default), WARNING, ERROR or CRITICAL, any case."""

    model_config = SettingsConfigDict(extra="ignore")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value
