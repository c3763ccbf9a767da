"""What runs around the routes: JSON bodies held to :mod:`prefpair.service.jsonbody`'s rules before
FastAPI parses them, and CORS preflights refused in the API's error shape. (The body size
limit is :class:`prefpair.service.limits.BodySizeLimit`.)"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.datastructures import Headers

from prefpair.service.exceptions import RefusedError
from prefpair.service.jsonbody import MAX_BODY_DEPTH, TOO_DEEP, depth_overflow, field_path, takes_json
from prefpair.service.limits import BodyTooLarge
from prefpair.service.refusals import error_response
from prefpair.unicode_text import invalid_text


class CheckedJsonRoute(APIRoute):
    """A route whose JSON body is held to :mod:`prefpair.service.jsonbody`'s rules before FastAPI
    parses and validates it: nested too deep, or not valid Unicode, anywhere in it, is a 422
    naming the field."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler

        async def checked(request: Request) -> Response:
            if takes_json(request.headers.get("content-type")):
                await check_json_body(request)
            return await handler(request)

        return checked


async def check_json_body(request: Request) -> None:
    """Refuse a JSON body nested deeper than any field may be, or with text that is not Unicode.

    The depth is checked on the raw text, before anything recurses through it; the parsed body
    is kept by the request, so FastAPI does not parse it again.
    """
    try:
        body = await request.body()
    except BodyTooLarge:
        raise RefusedError(413, "body_too_large", "request body is larger than the limit") from None
    if not body:
        return
    try:
        text = body.decode(json.detect_encoding(body), "surrogatepass")  # as json.loads reads bytes
    except UnicodeDecodeError as exc:
        reason = f"body: not Unicode text ({exc.reason} at byte {exc.start})"
        raise RefusedError(422, "invalid_request", reason) from None
    where = depth_overflow(text, MAX_BODY_DEPTH)
    if where is not None:
        name = field_path(where)
        raise RefusedError(422, "invalid_request", f"{name}: {TOO_DEEP}", name)
    try:
        value = await request.json()
    except json.JSONDecodeError:
        return  # not JSON: FastAPI answers 422 with the parser's message
    except ValueError as exc:  # JSON that Python does not read, e.g. an integer of over 4300 digits
        raise RefusedError(422, "invalid_request", f"body: {str(exc).split(';')[0]}") from None
    problem = invalid_text(value)
    if problem is not None:
        name = field_path(problem[0])
        raise RefusedError(422, "invalid_request", f"{name or 'body'}: {problem[1]}", name or None)


class JsonRefusalCORSMiddleware(CORSMiddleware):
    """Starlette's CORS handling, with a refused preflight answered in the API's error shape."""

    # Starlette's words for what a preflight asked for and was refused, and the header that asked.
    ASKED_BY = {
        "origin": "Origin",
        "method": "Access-Control-Request-Method",
        "headers": "Access-Control-Request-Headers",
        "private-network": "Access-Control-Request-Private-Network",
    }

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code < 400:
            return response
        reason = bytes(response.body).decode("utf-8")
        refused = [part.strip() for part in reason.removeprefix("Disallowed CORS ").split(",")]
        headers = {
            name: value
            for name, value in response.headers.items()
            if name.lower() not in ("content-length", "content-type")
        }
        return error_response(
            response.status_code,
            "cors_refused",
            f"CORS preflight refused: {reason}",
            self.ASKED_BY.get(refused[0]),
            headers,
        )
