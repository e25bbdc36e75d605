"""A real S3-protocol server on loopback: moto's standalone server
(`moto[server]`, a dev dependency), one per test module.

`s3` starts it on a free port, creates a bucket, and points the standard
variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`) at it for the module's tests, restored afterwards;
the server is stopped when the module is done (tests/support/leaks.py holds
us to it). `s3_export_dir` is a fresh `s3://bucket/<prefix>` for one test.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.net import free_port, wait_for

BUCKET = "vitals-exports"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str
    env: dict[str, str]

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"


def _up(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(endpoint + "/moto-api/", timeout=1):  # noqa: S310 (loopback)
            return True
    except (urllib.error.URLError, OSError):
        return False


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "vitals-test",
        "AWS_SECRET_ACCESS_KEY": "vitals-test-secret",
        "AWS_EC2_METADATA_DISABLED": "true",  # never probe an instance-metadata service
    }
    try:
        wait_for(lambda: proc.poll() is None and _up(endpoint), 60, "the moto S3 server")
        with pytest.MonkeyPatch.context() as mp:
            for key, value in env.items():
                mp.setenv(key, value)
            import boto3

            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
            yield S3Server(endpoint, BUCKET, env)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def s3_export_dir(s3: S3Server) -> str:
    return s3.url(f"exports-{uuid.uuid4().hex[:8]}")
