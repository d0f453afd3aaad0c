"""Network namespaces for tests that run components as separate hosts (root only).

A ``Network`` is a private IPv4 /24 inside 10.231.0.0/16, chosen so that it overlaps no address
or route the machine already has: a bridge in a namespace of its own (the *hub*), one namespace
per ``Host`` joined to the bridge by a veth pair (``eth0`` inside, with the host's address, and
``lo`` up for the host's own use), and one veth into the test's own namespace, so the test
process reaches every host at its address.  There is no default route in any of them, no NAT
and no forwarding: nothing leaves the machine, and the machine's existing interfaces and routes
are not touched (the test's veth adds only its own /24).

Every name starts with a per-run prefix (``dft<pid>``), so a leftover of a crashed run cannot
collide with this one; ``create()`` removes such leftovers whose run is gone
(``remove_stale``).  ``close()`` stops every process started in a host (SIGTERM, then
SIGKILL after a timeout, then whatever is still inside the namespaces), deletes the test's
veth and every namespace, and can be called any number of times; ``leftovers()`` lists what is
still there.  Processes are started with ``ip netns exec``, which execs the command: the
``Popen``'s pid is the command's own.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, NamedTuple

#: The range the networks are taken from (a /24 each): private, and unusual enough that a
#: machine rarely routes it.
POOL = ipaddress.IPv4Network("10.231.0.0/16")
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class NetnsError(RuntimeError):
    """An ``ip`` command failed (the message has its arguments and stderr)."""


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def unavailable() -> str | None:
    """Why namespaces cannot be used here (``None``: they can).

    Checks root, the ``ip`` command, and that a namespace can actually be created (a
    container without ``CAP_SYS_ADMIN`` refuses).
    """
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    probe = f"dft{os.getpid()}-probe"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def pick_subnet(start: int | None = None) -> ipaddress.IPv4Network:
    """A /24 of ``POOL`` that overlaps none of this namespace's addresses and routes.

    Other runs' networks show up here as their veth's route, so concurrent runs get
    different ones.  ``start`` (default: the pid) is the third byte tried first.
    """
    taken: list[ipaddress.IPv4Network] = []
    routes = json.loads(_ip("-j", "-4", "route", "show", "table", "all").stdout or "[]")
    for route in routes:
        dst = route.get("dst", "default")
        if dst != "default":
            taken.append(ipaddress.IPv4Network(dst, strict=False))
    for link in json.loads(_ip("-j", "-4", "addr", "show").stdout or "[]"):
        for addr in link.get("addr_info", []):
            taken.append(ipaddress.IPv4Network(f"{addr['local']}/{addr['prefixlen']}",
                                               strict=False))
    subnets: list[ipaddress.IPv4Network] = list(POOL.subnets(new_prefix=24))
    first = (os.getpid() if start is None else start) % len(subnets)
    for k in range(len(subnets)):
        candidate = subnets[(first + k) % len(subnets)]
        if not any(candidate.overlaps(net) for net in taken):
            return candidate
    raise NetnsError(f"every /24 of {POOL} overlaps an address or route of this machine")


@dataclass(frozen=True)
class Host:
    """One namespace on the bridge: ``role``, namespace ``ns``, IPv4 ``address``."""

    role: str
    ns: str
    address: str

    def url(self, scheme: str, port: int) -> str:
        """``scheme://address:port`` (``tcp``, ``http``, ``redis``...)."""
        return f"{scheme}://{self.address}:{port}"


class TcpSocket(NamedTuple):
    """One line of ``ss -tan``: state, local and peer address and port (0 for ``*``)."""

    state: str
    local: str
    local_port: int
    peer: str
    peer_port: int


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]").split("%")[0]  # "[::ffff:10.0.0.1]", "127.0.0.53%lo"
    if host.startswith("::ffff:"):
        host = host[len("::ffff:"):]
    if host == "*":
        host = "0.0.0.0"
    return host, 0 if port == "*" else int(port)


def parse_ss(text: str) -> list[TcpSocket]:
    """The sockets of ``ss -Htan`` output (no header line)."""
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5:
            continue
        local, lport = _endpoint(fields[3])
        peer, pport = _endpoint(fields[4])
        out.append(TcpSocket(fields[0], local, lport, peer, pport))
    return out


def is_loopback(address: str) -> bool:
    """Whether ``address`` is in 127.0.0.0/8 or ``::1``."""
    ip = ipaddress.ip_address(address)
    return any(ip in net for net in LOOPBACK if net.version == ip.version)


class Network:
    """A bridge, its hosts and the processes started in them; see the module docstring.

    Parameters
    ----------
    prefix : str, optional
        Start of every name this network creates (default ``dft<pid>``, at most 10
        characters: the test's veth carries it and interface names have 15).
    """

    def __init__(self, prefix: str | None = None) -> None:
        self.prefix = prefix or f"dft{os.getpid()}"
        if len(self.prefix) > 12:
            raise ValueError(f"prefix {self.prefix!r} is too long for an interface name")
        self.hub = f"{self.prefix}-hub"
        self.veth = self.prefix  # the test's end, in the test's namespace
        self.subnet: ipaddress.IPv4Network | None = None
        self.address = ""  # the test's own address on the bridge
        self.hosts: list[Host] = []
        self.procs: list[subprocess.Popen[Any]] = []
        self._namespaces: list[str] = []

    # === building ===

    def create(self) -> Network:
        """Make the hub namespace, its bridge and the test's veth; returns ``self``."""
        remove_stale()
        self._remove_names()  # a crashed run with the same pid
        self.subnet = pick_subnet()
        self._add_namespace(self.hub)
        _ip("-n", self.hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.hub, "link", "set", "br0", "up")
        _ip("link", "add", self.veth, "type", "veth", "peer", "name", "test", "netns", self.hub)
        _ip("-n", self.hub, "link", "set", "test", "master", "br0", "up")
        self.address = str(self.subnet[1])
        _ip("addr", "add", f"{self.address}/{self.subnet.prefixlen}", "dev", self.veth)
        _ip("link", "set", self.veth, "up")
        return self

    def add_host(self, role: str) -> Host:
        """A namespace ``<prefix>-<role>`` on the bridge with the next free address."""
        if self.subnet is None:
            raise RuntimeError("create() the network first")
        index = len(self.hosts) + 2  # .1 is the test's
        ns = f"{self.prefix}-{role}"
        address = str(self.subnet[index])
        port = f"h{index}"  # the hub's end: names inside the hub only
        self._add_namespace(ns)
        _ip("-n", self.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0",
            "netns", ns)
        _ip("-n", self.hub, "link", "set", port, "master", "br0", "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", ns, "addr", "add", f"{address}/{self.subnet.prefixlen}", "dev", "eth0")
        _ip("-n", ns, "link", "set", "eth0", "up")
        host = Host(role, ns, address)
        self.hosts.append(host)
        return host

    def _add_namespace(self, ns: str) -> None:
        _ip("netns", "add", ns)
        self._namespaces.append(ns)

    # === running things in a host ===

    def popen(self, host: Host, argv: Sequence[str], env: Mapping[str, str], log: Path,
              *, stdin: int | None = None, stdout: int | None = None,
              cwd: Path | None = None, text: bool = False) -> subprocess.Popen[Any]:
        """Start ``argv`` in ``host``; stderr (and stdout unless piped) go to ``log``.

        ``text``: the pipes (``stdin``/``stdout`` = ``subprocess.PIPE``) carry lines of text.
        """
        with open(log, "wb") as fh:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", host.ns, *argv], env=dict(env), cwd=cwd,
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=stdout if stdout is not None else fh, stderr=fh,
                text=text, bufsize=1 if text else -1)
        self.procs.append(proc)
        return proc

    def run(self, host: Host, argv: Sequence[str],
            timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``host`` to its end; raises on a nonzero exit."""
        proc = subprocess.run(["ip", "netns", "exec", host.ns, *argv], capture_output=True,
                              text=True, timeout=timeout)
        if proc.returncode != 0:
            raise NetnsError(f"{' '.join(argv)} in {host.ns}: {proc.stderr.strip()}")
        return proc

    def tcp_sockets(self, host: Host) -> list[TcpSocket]:
        """Every TCP socket of ``host``'s namespace (listening, connected, closing)."""
        return parse_ss(self.run(host, ["ss", "-Htan"]).stdout)

    @staticmethod
    def stop(proc: subprocess.Popen[Any], timeout: float = 10.0) -> int | None:
        """SIGTERM ``proc``, wait ``timeout``; SIGKILL it then (returns ``None`` then)."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None

    # === teardown ===

    def close(self, timeout: float = 10.0) -> None:
        """Stop every process, delete the veth and every namespace (idempotent)."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in reversed(self.procs):
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                _close_quietly(pipe)
        self.procs.clear()
        for ns in self._namespaces:
            self._kill_inside(ns)
        self._remove_names()
        self._namespaces.clear()
        self.hosts.clear()

    @staticmethod
    def _kill_inside(ns: str) -> None:
        # Anything still inside (a child a component forked): nobody else runs there.
        pids = _ip("netns", "pids", ns, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass

    def _remove_names(self) -> None:
        # The veth first: deleting a namespace frees its links only when the kernel gets to
        # it, so the test's end could outlive the call by a moment.
        if _ip("link", "show", self.veth, check=False).returncode == 0:
            _ip("link", "del", self.veth)
        for ns in self._own_namespaces():
            _ip("netns", "del", ns)

    def _own_namespaces(self) -> list[str]:
        listed = _ip("netns", "list").stdout.split("\n")
        names = [line.split()[0] for line in listed if line.strip()]
        return [n for n in names if n.startswith(self.prefix + "-")]

    def leftovers(self) -> list[str]:
        """Namespaces and links of this run's prefix that still exist."""
        links = json.loads(_ip("-j", "link", "show").stdout or "[]")
        names = [str(link["ifname"]) for link in links if link["ifname"] == self.veth]
        return self._own_namespaces() + names

    def __enter__(self) -> Network:
        try:
            return self.create()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()


def remove_stale() -> list[str]:
    """Remove what runs killed before their teardown left: the namespaces (and whatever
    still runs in them) and veths named ``dft<pid>...`` whose process no longer exists.

    Returns the names removed.  A live run's names are left alone.
    """
    removed = []
    listed = _ip("netns", "list").stdout.split("\n")
    for name in (line.split()[0] for line in listed if line.strip()):
        match = _STALE_NS.fullmatch(name)
        if match and not _alive(int(match.group(1))):
            Network._kill_inside(name)
            _ip("netns", "del", name, check=False)
            removed.append(name)
    for link in json.loads(_ip("-j", "link", "show", "type", "veth").stdout or "[]"):
        match = _STALE_LINK.fullmatch(str(link["ifname"]))
        if match and not _alive(int(match.group(1))):
            _ip("link", "del", str(link["ifname"]), check=False)
            removed.append(str(link["ifname"]))
    return removed


_STALE_NS = re.compile(r"dft(\d+)-[a-z0-9-]+")
_STALE_LINK = re.compile(r"dft(\d+)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _close_quietly(pipe: IO[Any] | None) -> None:
    if pipe is not None:
        try:
            pipe.close()
        except OSError:
            pass
