"""The devstack's moto finds the service a request is for once per host
(devstack/lib/moto_dispatch.py): the answer is the one moto's own dispatcher gives, moto's own
search runs once for each host however many requests name it, and the table of hosts stays
bounded whatever hosts clients invent.
"""

import os
import sys

import boto3
import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "devstack", "lib"))
import moto_dispatch  # noqa: E402
from moto.moto_server.werkzeug_app import (  # noqa: E402
    DomainDispatcherApplication,
    create_backend_app,
)

HOSTS = [
    None,
    "moto_api",
    "s3",
    "s3.amazonaws.com",
    "s3.us-east-1.amazonaws.com",
    "some-bucket.s3.us-east-1.amazonaws.com",
    "sqs.us-east-1.amazonaws.com",
    "dynamodb.us-east-1.amazonaws.com",
    "email.us-east-1.amazonaws.com",
    "sns.eu-west-1.amazonaws.com",
    "127.0.0.1:4566",
    "not-a-service.example",
]


@pytest.fixture
def dispatcher():
    """moto's dispatcher with install()'s method, without touching the class for other tests."""
    app = DomainDispatcherApplication(create_backend_app)
    app.get_backend_for_host = moto_dispatch._get_backend_for_host.__get__(app)
    return app


def test_each_host_gets_the_backend_moto_itself_finds(dispatcher):
    plain = DomainDispatcherApplication(create_backend_app)
    for _ in range(2):
        for host in HOSTS:
            assert dispatcher.get_backend_for_host(host) == moto_dispatch._original(plain, host)
    assert dispatcher.get_backend_for_host("s3.us-east-1.amazonaws.com") == "s3"
    assert dispatcher.get_backend_for_host("dynamodb.us-east-1.amazonaws.com") == "dynamodb"


def test_moto_searches_once_per_host(dispatcher, monkeypatch):
    searched = []

    def counting(self, host):
        searched.append(host)
        return "s3"

    monkeypatch.setattr(moto_dispatch, "_original", counting)
    for _ in range(5):
        assert dispatcher.get_backend_for_host("s3.us-east-1.amazonaws.com") == "s3"
        assert dispatcher.get_backend_for_host("sqs.us-east-1.amazonaws.com") == "s3"
    assert searched == ["s3.us-east-1.amazonaws.com", "sqs.us-east-1.amazonaws.com"]


def test_invented_hosts_do_not_grow_the_table_without_end(dispatcher, monkeypatch):
    monkeypatch.setattr(moto_dispatch, "_original", lambda self, host: None)
    for n in range(3 * moto_dispatch._MOST):
        dispatcher.get_backend_for_host(f"h{n}.example")
    assert 0 < len(dispatcher._backend_by_host) <= moto_dispatch._MOST


def test_the_running_local_stack_dispatches_every_service():
    """The local stack's moto has it installed: each service still answers its own calls."""
    assert "Buckets" in boto3.client("s3").list_buckets()
    assert "QueueUrls" in boto3.client("sqs").list_queues()
    assert "TableNames" in boto3.client("dynamodb").list_tables()
    assert "EmailIdentities" in boto3.client("sesv2").list_email_identities()
    assert "Topics" in boto3.client("sns").list_topics()
