"""Error bodies: every refusal is JSON `{"error", "detail"}`; our exceptions map
to statuses here (`install_handlers`), so routes raise instead of answering."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from core.errors import InputError, NotFound, StorageError, StorageUnavailable

RETRY_AFTER_S = 5


class ApiError(Exception):
    """A refusal with its HTTP status and error code (401 and 403 of the roles)."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_SUBCLASS),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def error(status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return json_response({"error": code, "detail": detail}, status, headers)


def unavailable(detail: str = "storage is unavailable; retry later") -> Response:
    return error(503, "unavailable", detail, {"Retry-After": str(RETRY_AFTER_S)})


def install_handlers(app: FastAPI) -> None:
    """Map the project's errors to JSON `{"error", "detail"}` responses."""

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error(exc.status, exc.code, exc.detail, headers)

    async def on_input_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, InputError)
        status = 404 if isinstance(exc, NotFound) else 409 if exc.code == "duplicate" else 400
        return error(status, exc.code, str(exc))

    async def on_storage_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, StorageUnavailable):
            return unavailable()
        return error(500, "storage_error", "the database refused the operation")

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(InputError, on_input_error)
    app.add_exception_handler(StorageError, on_storage_error)


class ReasonedRoute(APIRoute):
    """A route whose body validation failures answer 422 `{"error":
    "invalid_body", "detail"}` with the fields that failed, like every other
    refusal (instead of FastAPI's default body)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as e:
                where = ", ".join(
                    ".".join(str(p) for p in err.get("loc", ())[1:]) or "body" for err in e.errors()
                )
                return error(422, "invalid_body", f"invalid or missing: {where}")

        return route
