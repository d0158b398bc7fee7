"""``scheduler_options`` and ``interface=``: where a cluster's scheduler listens. Pure, no I/O.

Every cluster takes dask-jobqueue's ``scheduler_options`` dict (config key
``<kind>.scheduler-options``), with dask's meaning:

``host``               the address to listen on and to tell workers and clients
``interface``          listen on this network interface's address (``ib0``, ``eth0``, ``lo``)
``port``               the port (0: any free port)
``dashboard_address``  ``":8787"``, ``"host:port"`` or a port number (None: no dashboard)
``protocol``           ``tcp`` or ``tls`` (``tcp://``/``tls://`` as dask writes them)
``security``           a :class:`~jobqueue.core.security.Security` (or True: TLS with a
                       temporary certificate)

and the cluster's ``interface=`` (dask-jobqueue's): the interface the workers listen on, and,
unless ``scheduler_options`` names a host or an interface, the scheduler's too, so the address
workers are told is the scheduler's address on that interface.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ACCEPTED = ("host", "interface", "port", "dashboard_address", "protocol", "security")
PROTOCOLS = {"tcp": "tcp", "tcp://": "tcp", "tls": "tls", "tls://": "tls"}


@dataclass(frozen=True)
class SchedulerOptions:
    """Checked ``scheduler_options``; ``given`` names the keys that were set."""
    host: str | None = None
    interface: str | None = None
    port: int | None = None
    dashboard_address: str | None = None
    protocol: str | None = None
    security: Any = None
    given: frozenset = field(default_factory=frozenset)


def check(options: Any, what: str) -> SchedulerOptions:
    """``options`` (a dict, keys with _ or -) checked; ValueError naming ``what`` (e.g.
    "SLURMCluster scheduler_options"), the key and what is accepted."""
    if options is None:
        return SchedulerOptions()
    if not isinstance(options, dict):
        raise ValueError(f"{what} must be a dict such as {{'interface': 'ib0', 'port': 8786}}, "
                         f"not {type(options).__name__}")
    values: dict = {}
    for key, value in options.items():
        name = str(key).replace("-", "_")
        if name not in ACCEPTED:
            raise ValueError(f"{what}: unknown key {key!r}; accepted: {', '.join(ACCEPTED)}")
        values[name] = value
    if values.get("host") and values.get("interface"):
        raise ValueError(f"{what}: give host or interface, not both "
                         f"(host={values['host']!r}, interface={values['interface']!r})")
    for name in ("host", "interface"):
        if values.get(name) is not None and not isinstance(values[name], str):
            raise ValueError(f"{what}: {name} must be a string, not {values[name]!r}")
    port = values.get("port")
    if port is not None and (isinstance(port, bool) or not isinstance(port, int)
                             or not 0 <= port < 65536):
        raise ValueError(f"{what}: port must be a whole number from 0 (any free port) to "
                         f"65535, not {port!r}")
    if "dashboard_address" in values:
        values["dashboard_address"] = _dashboard(values["dashboard_address"], what)
    if values.get("protocol") is not None:
        protocol = PROTOCOLS.get(str(values["protocol"]).lower())
        if protocol is None:
            raise ValueError(f"{what}: protocol {values['protocol']!r} is not one jobqueue "
                             f"speaks; use tcp or tls")
        values["protocol"] = protocol
    if values.get("security") is not None:
        values["security"] = _security(values["security"], values.get("protocol"), what)
    return SchedulerOptions(**values, given=frozenset(values))


def _dashboard(value, what: str):
    if value is None or value is False:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return f":{value}"
    if isinstance(value, str):
        return value
    raise ValueError(f"{what}: dashboard_address must be like ':8787' or 'host:8787' (None: no "
                     f"dashboard), not {value!r}")


def _security(value, protocol, what: str):
    from ..core.security import Security

    if value is True:
        return Security("tls")               # a temporary certificate, made at start
    if not isinstance(value, Security):
        raise ValueError(f"{what}: security must be a jobqueue.core.security.Security (or True "
                         f"for TLS with a temporary certificate), not {type(value).__name__}; "
                         f"dask's Security objects are not read: set security.tls-ca-file, "
                         f"tls-cert and tls-key in the config instead")
    if protocol is not None and protocol != value.protocol:
        raise ValueError(f"{what}: protocol {protocol!r} and a security of protocol "
                         f"{value.protocol!r} disagree")
    return value


def listen_host(options: SchedulerOptions, interface: str | None, default: str | None,
                what: str, address_of) -> str | None:
    """The address the scheduler listens on and advertises: scheduler_options' host, its
    interface's address, else the cluster's ``interface``'s, else ``default``.
    ``address_of(name)`` gives an interface's address (it raises ValueError naming the
    interfaces that exist)."""
    if options.host:
        return options.host
    name = options.interface or interface
    if not name:
        return default
    key = "scheduler_options interface" if options.interface else "interface"
    try:
        return address_of(name)
    except ValueError as e:
        raise ValueError(f"{what} {key}={name!r}: {e}") from None


def security(options: SchedulerOptions, default):
    """The scheduler's Security: scheduler_options' security, else ``default`` (the config's)
    with scheduler_options' protocol, if one was given; None: the config's, as it is."""
    if options.security is not None:
        return options.security
    if options.protocol is None:
        return None
    from dataclasses import replace

    return replace(default(), protocol=options.protocol)
