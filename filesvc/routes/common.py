"""What every route does first: authenticate, check the company, parse the ids."""

from __future__ import annotations

from aiohttp import web

from filesvc.appkeys import TOKENS
from filesvc.auth import Caller, bearer_from_header
from filesvc.errors import Unauthorized
from filesvc.params import parse_company_id, parse_file_id

PREFIX = "/internal/services/files/v1"


def authenticate(request: web.Request, *, allow_query_token: bool = False) -> Caller:
    """The verified caller, who must belong to the path's company (403 otherwise)."""
    token = bearer_from_header(request.headers.get("Authorization"))
    if token is None and allow_query_token:
        token = request.query.get("token") or None
    if token is None:
        raise Unauthorized("authentication required: send 'Authorization: Bearer <token>'")
    caller = request.app[TOKENS].verify(token)
    caller.require_company(request.match_info["company_id"])
    return caller


def company_id(request: web.Request) -> str:
    """The path's company id, validated."""
    return parse_company_id(request.match_info["company_id"])


def file_id(request: web.Request) -> str:
    """The path's file id, validated."""
    return parse_file_id(request.match_info["file_id"])
