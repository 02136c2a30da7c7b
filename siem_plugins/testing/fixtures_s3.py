"""pytest fixtures for the S3 test server (see :mod:`siem_plugins.testing.s3server`).

``s3_server`` is one server per test session, reset (faults, recorded requests, every
bucket) before each test; ``s3_bucket`` is a fresh bucket on it; ``s3_faults`` is its
fault injector, and skips the test when an external endpoint stands in for moto.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest

from siem_plugins.testing.s3server import Faults, S3Server


@pytest.fixture(scope="session")
def s3_server_session() -> Iterator[S3Server]:
    """The session's S3 endpoint (moto on 127.0.0.1, or ``SIEM_TEST_S3_ENDPOINT``)."""
    server = S3Server.from_environment()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_server(s3_server_session: S3Server) -> S3Server:
    """The session's S3 endpoint, with no faults, no recorded requests and no buckets."""
    s3_server_session.reset()
    return s3_server_session


@pytest.fixture
def s3_faults(s3_server: S3Server) -> Faults:
    """The server's fault injector; skips the test on an external endpoint."""
    if s3_server.faults is None:
        pytest.skip("fault injection needs the in-process moto server")
    return s3_server.faults


@pytest.fixture
def s3_bucket(s3_server: S3Server) -> Iterator[str]:
    """A freshly created, empty bucket (emptied and deleted afterwards if external)."""
    name = s3_server.create_bucket()
    yield name
    if s3_server.external:
        with contextlib.suppress(Exception):
            s3_server.empty_bucket(name)
            s3_server.client().delete_bucket(Bucket=name)


@pytest.fixture
def s3_fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore retries without backoff sleeps, so retry tests take milliseconds.

    Only the delay changes: what is retried, and how often, stays botocore's decision.
    """
    from botocore.retries import standard

    def no_delay(self: Any, context: Any) -> float:
        return 0.0

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", no_delay)
