"""TLS for every connection of a cluster, as an option on top of the token handshake.

``security.protocol: tls`` in the config (or ``JOBQUEUE_SECURITY__PROTOCOL=tls``) makes the
scheduler and the workers listen with TLS and advertise ``tls://`` addresses; whoever connects
to a ``tls://`` address speaks TLS. Both sides present a certificate signed by the cluster's CA
(mutual TLS), and the token handshake still runs inside: TLS adds confidentiality, the token
decides who belongs to the cluster. Batches on a TLS connection carry no MAC of ours.

Certificates: ``tls-ca-file``, ``tls-cert`` and ``tls-key`` name PEM files (a site's own CA), or,
all three left null, :meth:`Security.temporary` makes a self-signed certificate for one cluster
(with the ``openssl`` command) in a private directory; its processes find the files through the
environment (:meth:`Security.env`). Host names are not checked: the CA is the cluster's own.
"""
from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

SCHEMES = ("tcp", "tls")


@dataclass(frozen=True)
class Security:
    protocol: str = "tcp"
    ca_file: str | None = None
    cert: str | None = None
    key: str | None = None

    def __post_init__(self):
        if self.protocol not in SCHEMES:
            raise ValueError(f"security.protocol must be one of {', '.join(SCHEMES)}, "
                             f"not {self.protocol!r}")

    @property
    def tls(self) -> bool:
        return self.protocol == "tls"

    @property
    def complete(self) -> bool:
        return bool(self.ca_file and self.cert and self.key)

    @classmethod
    def from_config(cls) -> Security:
        from .. import config

        return cls(protocol=config.get("security.protocol"),
                   ca_file=config.get("security.tls-ca-file"),
                   cert=config.get("security.tls-cert"), key=config.get("security.tls-key"))

    @classmethod
    def temporary(cls, directory: str) -> Security:
        """A self-signed certificate (its own CA) for one cluster, in *directory* (private)."""
        os.makedirs(directory, mode=0o700, exist_ok=True)
        cert, key = os.path.join(directory, "tls-cert.pem"), os.path.join(directory, "tls-key.pem")
        argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                "ec_paramgen_curve:prime256v1", "-nodes", "-days", "30", "-subj",
                "/CN=jobqueue-cluster", "-keyout", key, "-out", cert]
        old = os.umask(0o077)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        except FileNotFoundError:
            raise RuntimeError("security.protocol is tls without certificate files, and the "
                               "openssl command that would make temporary ones is not "
                               "installed: install openssl, or set security.tls-ca-file, "
                               "tls-cert and tls-key") from None
        finally:
            os.umask(old)
        if done.returncode:
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr}")
        return cls("tls", ca_file=cert, cert=cert, key=key)

    def ready(self, directory: str) -> Security:
        """Itself, or with temporary certificates in *directory* when TLS lacks its files."""
        if not self.tls or self.complete:
            return self
        if self.ca_file or self.cert or self.key:
            raise ValueError("security: set all of tls-ca-file, tls-cert and tls-key, or none "
                             "of them (for a temporary certificate)")
        return Security.temporary(directory)

    def env(self) -> dict:
        """Environment for this cluster's processes (file names only, never key material)."""
        if not self.tls:
            return {}
        return {"JOBQUEUE_SECURITY__PROTOCOL": "tls",
                "JOBQUEUE_SECURITY__TLS_CA_FILE": self.ca_file,
                "JOBQUEUE_SECURITY__TLS_CERT": self.cert,
                "JOBQUEUE_SECURITY__TLS_KEY": self.key}

    def context(self, server_side: bool):
        """An ssl.SSLContext (ssl is imported here: a worker without TLS does without it)."""
        import ssl

        if not (self.ca_file and self.cert and self.key):
            raise ValueError("TLS needs security.tls-ca-file, tls-cert and tls-key (or "
                             "protocol tls with none of them, for a temporary certificate)")
        purpose = ssl.Purpose.CLIENT_AUTH if server_side else ssl.Purpose.SERVER_AUTH
        ctx = ssl.create_default_context(purpose, cafile=self.ca_file)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.check_hostname = False    # the CA is the cluster's own; node names vary
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_cert_chain(self.cert, self.key)
        return ctx


def scheme_of(address: str) -> str:
    scheme = address.split("://", 1)[0] if "://" in address else "tcp"
    if scheme not in SCHEMES:
        raise ValueError(f"unknown protocol {scheme!r} in address {address!r} "
                         f"(one of {', '.join(SCHEMES)})")
    return scheme
