"""The REST API fuzzed from its own OpenAPI schema (schemathesis), against a real server on 127.0.0.1: a small
run (a few requests per operation and mode, valid and schema-breaking); ``python bench/reliability.py --part
fuzz-api`` runs it at volume and writes the figures to ``docs/RELIABILITY.md``. What must hold: no 5xx, an answer
to every request within its timeout, and the server up afterwards."""
from __future__ import annotations

import pytest

from builders import make_hypernetwork_dir
from fuzzing import FUZZ_USER, fuzz_api, fuzz_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    make_hypernetwork_dir(tmp / "hypernetworks")
    with fuzz_server(tmp / "server", tmp / "hypernetworks") as running:
        yield running


def test_rest_api_fuzzed_from_its_schema(server):
    result = fuzz_api(server.url, auth=FUZZ_USER, examples=3, seed=7, timeout=120)
    assert len(result.by_operation) >= 25  # every /sdapi/v1 operation of the schema
    assert result.requests >= 100
    assert result.failures == [], "\n".join(f"{label}: {what}\n  {curl}" for label, what, curl in result.failures)
    assert result.alive_after and server.process.poll() is None


def test_the_fuzz_server_refuses_without_credentials(server):
    import requests

    assert requests.get(f"{server.api}/options", timeout=30).status_code == 401
    assert requests.get(f"{server.url}/openapi.json", timeout=30).status_code == 401
