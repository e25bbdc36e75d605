"""`vitals serve` as a real subprocess (no tests here), and a self-signed
certificate made with `cryptography` for the TLS tests.

    with ServeProcess(env, "--admin-port", str(free_port())) as proc:
        httpx.get(proc.url("/healthz"))
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ingest.http.signatures import sign
from tests.support.net import free_port


def self_signed(directory: Path, name: str = "localhost") -> tuple[Path, Path]:
    """(certificate, key) PEM files for `name` and 127.0.0.1, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


class ServeProcess:
    """`python -m cli serve` on a free port; SIGTERM and wait on exit.

    stderr goes to a file (`stderr_text()`), so a test can read every log line.
    """

    def __init__(
        self,
        env: dict[str, str],
        *args: str,
        tmp: Path,
        scheme: str = "http",
        verify: Any = True,
    ) -> None:
        self.port = free_port()
        self.env = env
        self.args = args
        self.scheme = scheme
        self.verify = verify
        self.stderr_path = tmp / f"serve-{self.port}.stderr"
        self.process: subprocess.Popen[bytes] | None = None

    def url(self, path: str, port: int | None = None) -> str:
        return f"{self.scheme}://127.0.0.1:{port or self.port}{path}"

    def __enter__(self) -> ServeProcess:
        with open(self.stderr_path, "wb") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "cli", "serve", "--port", str(self.port), *self.args],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + 60
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"vitals serve exited early:\n{self.stderr_text()}")
            try:
                httpx.get(self.url("/healthz"), verify=self.verify, timeout=2)
                return self
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    self.__exit__()
                    raise RuntimeError(
                        f"vitals serve did not start:\n{self.stderr_text()}"
                    ) from None
                time.sleep(0.2)

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def post_readings(
        self, world: Any, points: Any, client: httpx.Client | None = None
    ) -> httpx.Response:
        """Signed POST of `points` (JSON) to the webhook of `world`'s provider."""
        body = orjson.dumps(points)
        url = self.url(f"/v1/providers/{world.provider_id}/readings")
        headers = {"Content-Type": "application/json", "Vitals-Signature": sign(world.secret, body)}
        if client is not None:
            return client.post(url, content=body, headers=headers)
        return httpx.post(url, content=body, headers=headers, verify=self.verify, timeout=30)

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def serve_env(db_url: str, **extra: str) -> dict[str, str]:
    from tests.support.pg import TEST_SECRET_KEY

    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALS_")}
    env.update({"VITALS_DATABASE_URL": db_url, "VITALS_SECRET_KEY": TEST_SECRET_KEY, **extra})
    return env
