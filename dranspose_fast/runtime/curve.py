"""ZeroMQ CURVE on the data sockets: who may send events, results and hellos (docs/security.md).

The servers (the ingesters' ROUTER, the reducer's PULL) hold the ensemble's server keypair and
an allow-list of client public keys; the clients (workers, the debug worker) hold the server's
public key and a client keypair.  libzmq does the handshake and the encryption; a ZAP handler
(pyzmq's authenticator thread) checks each client key against the allow-list before any byte of
the peer reaches Python, and a socket monitor counts every refused handshake.

Keys come from the environment or from a directory of ``zmq.auth`` certificate files, as a
Kubernetes secret mounts them (``dranspose-fast keys DIR`` writes one):

=================================  ==========================================================
``DFAST_CURVE``                    ``on`` / ``off``; unset: on when keys are configured
``DFAST_CURVE_DIR``                ``server.key_secret`` (servers), ``server.key`` (clients),
                                   ``client.key_secret`` (clients), ``clients/*.key`` (the
                                   allow-list of the servers)
``DFAST_CURVE_SERVER_SECRET_KEY``  the server's secret key (Z85); its public key is derived
``DFAST_CURVE_SERVER_KEY``         the server's public key (Z85), for clients
``DFAST_CURVE_CLIENT_SECRET_KEY``  this client's secret key (Z85)
``DFAST_CURVE_CLIENT_KEYS``        allowed client public keys (Z85), comma-separated
=================================  ==========================================================

A variable wins over the file of the same key.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal

import zmq
import zmq.auth
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

from dranspose_fast.errors import DransposeFastError

__all__ = [
    "ClientKeys", "CurveError", "CurveServer", "CurveSettings", "ServerKeys", "client_keys",
    "ephemeral_environment", "missing_keys_message", "secure_client", "server_keys",
    "undecided", "write_keys",
]

logger = logging.getLogger(__name__)

#: The ZAP domain of our server sockets (RFC 27); the allow-list answers for it only.
ZAP_DOMAIN: Final = "dranspose-fast"
#: Handshake failures the monitor counts: a peer without CURVE or with the wrong server key
#: (protocol), a client key not on the allow-list (auth), anything else libzmq gives up on.
_REFUSALS: Final = (zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                    | zmq.EVENT_HANDSHAKE_FAILED_AUTH)

Role = Literal["server", "client"]


class CurveError(DransposeFastError, ValueError):
    """CURVE is asked for but its keys are missing or unreadable; the message names them."""


def _key_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.replace("\n", ",").split(",") if item.strip()]
    return value


def _z85_key(text: str, what: str) -> bytes:
    """The 32-byte key a 40-character Z85 text holds."""
    text = text.strip()
    try:
        raw = z85.decode(text) if len(text) == 40 else b""
    except (ValueError, KeyError, IndexError):
        raw = b""
    if len(raw) != 32:
        raise CurveError(f"{what}: not a CURVE key (40 characters of Z85, as "
                         "`dranspose-fast keys` writes them)")
    return text.encode("ascii")


class CurveSettings(BaseSettings):
    """Where the CURVE keys of a component come from (module docstring)."""

    model_config = SettingsConfigDict(extra="ignore", hide_input_in_errors=True)

    curve: bool | None = Field(None, validation_alias=AliasChoices("dfast_curve"))
    curve_dir: Path | None = Field(None, validation_alias=AliasChoices("dfast_curve_dir"))
    curve_server_secret_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("dfast_curve_server_secret_key"))
    curve_server_key: str | None = Field(
        None, validation_alias=AliasChoices("dfast_curve_server_key"))
    curve_client_secret_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("dfast_curve_client_secret_key"))
    curve_client_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        (), validation_alias=AliasChoices("dfast_curve_client_keys"))

    _keys = field_validator("curve_client_keys", mode="before")(_key_list)

    @property
    def curve_configured(self) -> bool:
        """Whether any key source is set (a directory or a key variable)."""
        return bool(self.curve_dir or self.curve_server_secret_key or self.curve_server_key
                    or self.curve_client_secret_key or self.curve_client_keys)


@dataclass(frozen=True)
class ServerKeys:
    """A server socket's keypair and the client public keys it accepts (Z85, bytes)."""

    public: bytes
    secret: bytes
    allowed: frozenset[bytes]


@dataclass(frozen=True)
class ClientKeys:
    """A client socket's keypair and the public key of the servers it talks to (Z85)."""

    public: bytes
    secret: bytes
    server: bytes


def missing_keys_message() -> str:
    """The one line a standalone command gives when it has no keys and no decision."""
    return ("no CURVE keys for the data sockets: set DFAST_CURVE_DIR (or the "
            "DFAST_CURVE_*_KEY variables; `dranspose-fast keys DIR` writes them) or "
            "DFAST_CURVE=off to run unauthenticated")


def _certificate(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise CurveError(f"{path}: cannot read the CURVE certificate ({exc})") from None
    if secret and not secret_key:
        raise CurveError(f"{path}: holds no secret key")
    return _z85_key(public.decode("ascii", "replace"), str(path)), secret_key


def _off(settings: CurveSettings, role: Role) -> bool:
    """Whether CURVE is off for this component (logged once per call, as a warning)."""
    if settings.curve is False:
        logger.warning("DFAST_CURVE=off: the %s data sockets are unauthenticated and "
                       "unencrypted (docs/security.md)", role)
        return True
    if settings.curve is None and not settings.curve_configured:
        logger.warning("no CURVE keys (DFAST_CURVE_DIR): the %s data sockets are "
                       "unauthenticated; set DFAST_CURVE=off to say so (docs/security.md)", role)
        return True
    return False


def _secret_key(variable: SecretStr | None, folder: Path | None, who: Role) -> bytes:
    """The ``who`` secret key: ``DFAST_CURVE_<WHO>_SECRET_KEY``, else ``<who>.key_secret``."""
    name = f"DFAST_CURVE_{who.upper()}_SECRET_KEY"
    if variable is not None:
        return _z85_key(variable.get_secret_value(), name)
    path = folder / f"{who}.key_secret" if folder is not None else None
    if path is not None and path.is_file():
        return _certificate(path, secret=True)[1] or b""
    raise CurveError(f"CURVE is on but the {who} has no secret key: set {name} or put "
                     f"{who}.key_secret in DFAST_CURVE_DIR")


def server_keys(settings: CurveSettings) -> ServerKeys | None:
    """A server's keys, or ``None`` when CURVE is off (with a warning).

    Raises
    ------
    CurveError
        CURVE is on (asked for, or keys are configured) but the server secret key or the
        allow-list is missing or unreadable.
    """
    if _off(settings, "server"):
        return None
    folder = settings.curve_dir
    secret = _secret_key(settings.curve_server_secret_key, folder, "server")
    allowed = {_z85_key(key, "DFAST_CURVE_CLIENT_KEYS") for key in settings.curve_client_keys}
    clients = folder / "clients" if folder is not None else None
    if clients is not None and clients.is_dir():
        for path in sorted(clients.glob("*.key")):
            allowed.add(_certificate(path, secret=False)[0])
    if not allowed:
        raise CurveError("CURVE is on but no client key is allowed: set "
                         "DFAST_CURVE_CLIENT_KEYS or put public keys in DFAST_CURVE_DIR/clients/")
    return ServerKeys(zmq.curve_public(secret), secret, frozenset(allowed))


def client_keys(settings: CurveSettings) -> ClientKeys | None:
    """A client's keys, or ``None`` when CURVE is off (with a warning).

    Raises
    ------
    CurveError
        CURVE is on but the server public key or the client secret key is missing.
    """
    if _off(settings, "client"):
        return None
    folder = settings.curve_dir
    if settings.curve_server_key:
        server = _z85_key(settings.curve_server_key, "DFAST_CURVE_SERVER_KEY")
    elif settings.curve_server_secret_key is not None:
        server = zmq.curve_public(_z85_key(settings.curve_server_secret_key.get_secret_value(),
                                           "DFAST_CURVE_SERVER_SECRET_KEY"))
    elif folder is not None and (folder / "server.key").is_file():
        server = _certificate(folder / "server.key", secret=False)[0]
    else:
        raise CurveError("CURVE is on but the server's public key is unknown: set "
                         "DFAST_CURVE_SERVER_KEY or put server.key in DFAST_CURVE_DIR")
    secret = _secret_key(settings.curve_client_secret_key, folder, "client")
    return ClientKeys(zmq.curve_public(secret), secret, server)


def secure_client(sock: zmq.Socket[Any], keys: ClientKeys | None) -> None:
    """Make ``sock`` a CURVE client of the servers (before it connects); ``None``: plain."""
    if keys is None:
        return
    sock.curve_serverkey = keys.server
    sock.curve_publickey = keys.public
    sock.curve_secretkey = keys.secret


class _AllowList:
    """The ZAP check: a client key is on the allow-list (refusals are logged, sparsely)."""

    def __init__(self, allowed: frozenset[bytes], name: str) -> None:
        self.allowed = allowed
        self.name = name
        self.refused = 0

    def callback(self, domain: str, key: bytes) -> bool:
        if key in self.allowed:
            return True
        self.refused += 1
        if self.refused & (self.refused - 1) == 0:  # 1st, 2nd, 4th, 8th, ...
            logger.warning("%s: refused a CURVE client whose key %s is not allowed (%d so far)",
                           self.name, key.decode("ascii", "replace")[:8] + "...", self.refused)
        return False


class CurveServer:
    """CURVE for the server sockets of one context: the ZAP handler and the refusal counter.

    Start it before the sockets bind (``secure`` each); ``close`` it after they are closed and
    before the context is terminated.
    """

    def __init__(self, ctx: zmq.Context[Any], keys: ServerKeys, name: str) -> None:
        self.keys = keys
        self.name = name
        self._check = _AllowList(keys.allowed, name)
        self._auth = ThreadAuthenticator(ctx, log=logging.getLogger(f"{__name__}.zap"))
        self._auth.start()
        self._auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=self._check)
        self._ctx = ctx
        self._stop = threading.Event()
        self._watchers: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._refused = 0

    @property
    def refused(self) -> int:
        """Handshakes refused so far (no CURVE, wrong server key, key not allowed)."""
        return self._refused

    def secure(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE server with the allow-list, counting refusals (before bind)."""
        sock.curve_server = True
        sock.curve_secretkey = self.keys.secret
        sock.curve_publickey = self.keys.public
        sock.zap_domain = ZAP_DOMAIN.encode()
        address = f"inproc://dfast-curve-monitor-{id(sock):x}"
        sock.monitor(address, _REFUSALS | zmq.EVENT_MONITOR_STOPPED)  # stopped: sock closed
        watcher = threading.Thread(target=self._watch, args=(address,),
                                   name=f"{self.name}-curve-monitor", daemon=True)
        watcher.start()
        self._watchers.append(watcher)

    def _watch(self, address: str) -> None:
        events = self._ctx.socket(zmq.PAIR)
        try:
            events.connect(address)
            while not self._stop.is_set():
                if not events.poll(200):
                    continue
                event = recv_monitor_message(events)
                if event["event"] == zmq.EVENT_MONITOR_STOPPED:
                    return
                with self._lock:
                    self._refused += 1
                    refused = self._refused
                if refused & (refused - 1) == 0:
                    logger.warning("%s: refused a peer's handshake on %s (%s, code %s; %d so "
                                   "far): not a CURVE client of this ensemble", self.name,
                                   event["endpoint"].decode("utf8", "replace"),
                                   zmq.Event(event["event"]).name, event["value"], refused)
        finally:
            events.close(linger=0)

    def close(self) -> None:
        self._stop.set()
        for watcher in self._watchers:
            watcher.join(timeout=2)
        self._watchers.clear()
        self._auth.stop()


def write_keys(folder: Path, force: bool = False) -> Path:
    """Write a server keypair, a client keypair and the allow-list holding that client into
    ``folder`` (mode 0700, secret files 0600), as ``DFAST_CURVE_DIR`` reads them.

    Raises
    ------
    FileExistsError
        ``folder`` holds keys already and ``force`` is false (new keys lock out every
        component started with the old ones).
    """
    if not force and any((folder / name).exists() for name in ("server.key_secret",
                                                                "client.key_secret")):
        raise FileExistsError(f"{folder} holds CURVE keys already (--force writes new ones, "
                              "and every component must then be given them)")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    clients = folder / "clients"
    clients.mkdir(exist_ok=True, mode=0o700)
    for name in ("server", "client"):
        for suffix in (".key", ".key_secret"):
            (folder / f"{name}{suffix}").unlink(missing_ok=True)
        zmq.auth.create_certificates(folder, name)
        os.chmod(folder / f"{name}.key_secret", 0o600)
    (clients / "client.key").write_bytes((folder / "client.key").read_bytes())
    return folder


def undecided(settings: CurveSettings) -> bool:
    """Neither keys nor ``DFAST_CURVE`` are set: a standalone command refuses to start."""
    return settings.curve is None and not settings.curve_configured


def ephemeral_environment() -> dict[str, str]:
    """Fresh keys for an ensemble of this machine (``local``, ``combined``), as variables."""
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    return {
        "DFAST_CURVE": "on",
        "DFAST_CURVE_SERVER_SECRET_KEY": server_secret.decode(),
        "DFAST_CURVE_SERVER_KEY": server_public.decode(),
        "DFAST_CURVE_CLIENT_SECRET_KEY": client_secret.decode(),
        "DFAST_CURVE_CLIENT_KEYS": client_public.decode(),
    }
