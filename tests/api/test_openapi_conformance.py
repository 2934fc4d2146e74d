"""schemathesis over the app's own OpenAPI spec, in process (ASGI), against a scripted engine: no request it
generates may get a 5xx, and every answer must match the documented status codes, content types and schemas.
Valid and invalid requests are generated (positive and negative modes); examples are bounded so that the run
takes seconds. The event streams are left out (a session's never ends by design). Requests under a session use a real
session of the caller (except DELETE, which would end the run early)."""

from __future__ import annotations

from pathlib import Path

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from studio.draw import DrawSettings
from tests.api.conftest import make_service

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 15


def test_the_api_conforms_to_its_openapi_spec(tmp_path: Path) -> None:
    service, _ = make_service(tmp_path)
    app = create_app(service)
    headers = {"Authorization": f"Bearer {service.db.create_key('conformance')}"}
    session_id = service.db.create_session("conformance", "", 64, 64, DrawSettings()).id
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    checked = []
    streams = [operation for operation in operations if operation.path.endswith("/events")]
    for operation in operations:
        if operation in streams:
            continue

        @given(case=operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def conforms(case: schemathesis.Case) -> None:
            if "session_id" in (case.path_parameters or {}) and case.method != "DELETE":
                case.path_parameters["session_id"] = session_id
            case.call_and_validate(headers=headers, checks=CHECKS)

        conforms()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert len(checked) == len(operations) - len(streams) >= 12
    service.close(wait=False)
