"""The settings API (``/api/v1``): an account's SIEM integration, its health, tests.

Every route needs a token (``Authorization: Bearer ...``); an account's token touches only
its account, and any other account answers 404 exactly as a missing one does. Errors are
JSON: ``{"errors": [{"field": "sink.bucket", "message": "..."}]}``, the field being the
path in the integration's document (empty for the whole request).

One integration per account, as on the product's settings page; its name is the
account's (:func:`siem_plugins.control.store.integration_name`). The document is the
``[[integration]]`` table of docs/configuration.md without ``name`` and ``account``
(taken from the path); secrets are write-only: a read shows ``"set"``, a write that leaves
one out keeps the stored one.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from siem_plugins.web.auth import Principal, bearer
from siem_plugins.web.model import (
    SettingsError,
    delete_integration,
    event_types,
    health_of,
    read_integration,
    save_integration,
    send_test_email,
    send_test_object,
    set_enabled,
)

log = logging.getLogger(__name__)

#: The largest request body the API reads (a document is a few hundred bytes).
MAX_BODY = 64 * 1024


class FieldErrorModel(BaseModel):
    field: str = Field(description="path in the integration's document, e.g. sink.bucket")
    message: str


class ErrorModel(BaseModel):
    errors: list[FieldErrorModel]


class EventTypeModel(BaseModel):
    log_type: str
    type: str = Field(description="Device or Account")
    description: str


class IntegrationModel(BaseModel):
    name: str
    account: str
    version: int = Field(description="grows with every save; send it back as expected_version")
    enabled: bool
    document: dict[str, Any] = Field(description="the settings; secrets shown as 'set'")
    created: str
    updated: str
    updated_by: str


class SaveModel(BaseModel):
    document: dict[str, Any] = Field(
        description="the [[integration]] table of docs/configuration.md without name and "
        "account; a secret left out or empty keeps the stored one"
    )
    expected_version: int | None = Field(
        default=None,
        description="refuse the save unless the stored version is this (0: must be new)",
    )
    probe: bool = Field(default=True, description="probe the bucket and the mail server first")


class TestResultModel(BaseModel):
    ok: bool
    location: str = Field(description="where the test object or mail went")


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorModel, "description": "no valid token"},
    404: {"model": ErrorModel, "description": "no such integration (or account)"},
    409: {"model": ErrorModel, "description": "saved meanwhile by someone else"},
    413: {"model": ErrorModel, "description": "request body too large"},
    422: {"model": ErrorModel, "description": "invalid settings, or a failed probe"},
}


def error(status: int, message: str, field: str = "") -> JSONResponse:
    return JSONResponse({"errors": [{"field": field, "message": message}]}, status_code=status)


def not_found() -> JSONResponse:
    return error(404, "no such integration")


def principal(request: Request) -> Principal:
    """The caller, from the bearer token (raises :class:`SettingsError` 401 without)."""
    auth = request.app.state.auth
    found = auth.token(bearer(request.headers.get("authorization")))
    if found is None:
        raise SettingsError(401, "a valid API token is required (Authorization: Bearer ...)")
    found_principal: Principal = found
    return found_principal


def router() -> APIRouter:
    api = APIRouter(prefix="/api/v1", responses=ERRORS)

    @api.get("/event-types", response_model=list[EventTypeModel], tags=["settings"])
    def list_event_types(request: Request) -> Any:
        """The event types an integration can select to trigger an email."""
        principal(request)
        return event_types()

    @api.get("/accounts/{account}/integration", response_model=IntegrationModel, tags=["settings"])
    def get_integration(account: str, request: Request) -> Any:
        """The account's SIEM integration (secrets shown as "set")."""
        who = principal(request)
        found = read_integration(request.app.state.rt, who, account)
        return found if found is not None else not_found()

    @api.put("/accounts/{account}/integration", response_model=IntegrationModel, tags=["settings"])
    async def put_integration(account: str, request: Request) -> Any:
        """Create or replace the account's integration: validated as siem.toml is, its
        destinations probed, its secrets encrypted, the change recorded as a config
        event of the account. Nothing is saved when anything is refused."""
        who = await run_in_threadpool(principal, request)
        body = await read_json(request)
        try:
            save = SaveModel.model_validate(body)
        except Exception:
            raise SettingsError(
                422, "expected {document: {...}, expected_version?: int, probe?: bool}"
            ) from None
        # The save probes the customer's bucket (seconds, if it is slow): in a worker
        # thread, never on the event loop, so other requests go on meanwhile.
        return await run_in_threadpool(
            save_integration,
            request.app.state.rt,
            who,
            account,
            save.document,
            expected_version=save.expected_version,
            probe=save.probe,
        )

    @api.post(
        "/accounts/{account}/integration/enable",
        response_model=IntegrationModel,
        tags=["settings"],
    )
    def enable(account: str, request: Request) -> Any:
        """Enable the integration (a new version)."""
        return set_enabled(request.app.state.rt, principal(request), account, True)

    @api.post(
        "/accounts/{account}/integration/disable",
        response_model=IntegrationModel,
        tags=["settings"],
    )
    def disable(account: str, request: Request) -> Any:
        """Disable the integration: nothing more is shipped until it is enabled again."""
        return set_enabled(request.app.state.rt, principal(request), account, False)

    @api.delete("/accounts/{account}/integration", status_code=204, tags=["settings"])
    def delete(account: str, request: Request) -> Response:
        """Delete the integration (its delivery state stays: saved again, it continues)."""
        delete_integration(request.app.state.rt, principal(request), account)
        return Response(status_code=204)

    @api.get("/accounts/{account}/integration/health", tags=["settings"])
    def health(account: str, request: Request) -> Any:
        """Its state per destination (last success, lag, last error) and recent syncs."""
        return health_of(request.app.state.rt, principal(request), account)

    @api.post(
        "/accounts/{account}/integration/test-object",
        response_model=TestResultModel,
        tags=["settings"],
    )
    def test_object(account: str, request: Request) -> Any:
        """Write one object with one test event to the bucket (it stays there)."""
        return send_test_object(request.app.state.rt, principal(request), account)

    @api.post(
        "/accounts/{account}/integration/test-email",
        response_model=TestResultModel,
        tags=["settings"],
    )
    def test_email(account: str, request: Request) -> Any:
        """Send one test digest to the integration's recipients."""
        return send_test_email(request.app.state.rt, principal(request), account)

    return api


async def read_json(request: Request) -> Any:
    """The request's JSON body, at most :data:`MAX_BODY` bytes."""
    size = request.headers.get("content-length")
    if size is not None and (not size.isdigit() or int(size) > MAX_BODY):
        raise SettingsError(413, f"the body is larger than {MAX_BODY} bytes")
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise SettingsError(413, f"the body is larger than {MAX_BODY} bytes")
    try:
        return json.loads(data)
    except ValueError:
        raise SettingsError(422, "the body is not JSON") from None
