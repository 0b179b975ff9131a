"""A throwaway certificate authority for the sandbox: real TLS, trusted only through a CA bundle file.

The poller verifies every connection against the system trust store or `[http] ca_bundle`; the
sandbox hands it its CA as that bundle, so the same verification code runs in the demo and in tests.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import trustme


class SandboxCA:
    def __init__(self) -> None:
        self._ca = trustme.CA(organization_name="lead-poller sandbox")
        self._server_cert = self._ca.issue_cert("127.0.0.1", "localhost")

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_cert.configure_cert(context)
        return context

    def write_bundle(self, path: Path) -> Path:
        """Write the CA certificate (PEM) where a client's `ca_bundle` can point at it."""
        self._ca.cert_pem.write_to_path(str(path))
        return path
