"""Schemathesis against the service's own OpenAPI document, every operation: no 5xx, and
every answer conforms to the document (status codes, content types, headers, bodies)."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis.errors import Unsatisfiable  # noqa: E402
from schemathesis import GenerationMode, checks  # noqa: E402

import fastretrieve as fr  # noqa: E402
from serve_fixtures import ServerProcess, image_index  # noqa: E402

# Small enough for the test budget on 2 cores, across 12 operations.
EXAMPLES_PER_OPERATION = 12
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = image_index(tmp_path_factory.mktemp("fuzz") / "photos.fri", fr.Embedder("classic"))
    server = ServerProcess(path, "--max-body-mb", "1")
    yield server
    server.stop()


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_api_conforms_to_its_openapi_document(server, mode):
    api = schemathesis.openapi.from_url(server.url + "/v1/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 12
    for operation in operations:
        strategy = operation.as_strategy(GenerationMode(mode))

        @given(case=strategy)
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), database=None)
        def conforms(case):
            case.call_and_validate(base_url=server.url, headers=server.auth, checks=CHECKS,
                                   timeout=60)

        try:
            conforms()
        except Unsatisfiable:
            # Negative cases need an input to break: operations without parameters or
            # body have none.
            assert mode == "negative", operation.label
        except Exception as error:
            raise AssertionError(f"{operation.label}: {error}") from error
    assert server.process.poll() is None
