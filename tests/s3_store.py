"""A real S3 endpoint for tests: moto's S3 server on a free local port.

`s3_environment()` starts it, creates a bucket and sets the AWS_* variables pyarrow (and so
Ray Data, Ray Train and `pipeline.storage`) reads, so a Ray cluster started afterwards hands
the same endpoint to all its workers. Everything goes through HTTP, as with a cloud store.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

BUCKET = "nmt-test"


@contextlib.contextmanager
def s3_environment() -> Iterator[str]:
    """Yields the bucket's URI, "s3://nmt-test"; restores the environment afterwards."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    settings = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield f"s3://{BUCKET}"
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()
