"""The HTTP server's request body limit follows DATA_UPLOAD_MAX_MEMORY_SIZE (issue 19):
waitress refuses a larger body before reading it. A real waitress server on a free port."""

from __future__ import annotations

import http.client
import time

import pytest

from service.supervisor import HttpServer

pytestmark = pytest.mark.django_db(transaction=True)


def test_waitress_refuses_a_body_above_data_upload_max_memory_size(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    server = HttpServer(host="127.0.0.1", port=0)
    server.start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        body = b"{" + b" " * 10_000 + b"}"
        connection.request(
            "POST", "/api/v1/fills/onchain", body=body, headers={"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        text = response.read().decode()
        assert response.status == 413
        assert "exceeds max_body of 4096" in text and "waitress" in text
        connection.close()
    finally:
        server.stop(time.monotonic() + 5)
