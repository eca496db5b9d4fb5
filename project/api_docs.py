"""The API's description: the OpenAPI document (project/openapi.yaml) and a page rendering it.

The document is a data file kept beside the code and checked against it by
tests/test_api_schema.py; it is read once per process. Documented in docs/api.md.
"""

import functools
from pathlib import Path
from typing import Any

import yaml
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from project.http import ApiError, api_view, json_response, methods

SCHEMA_PATH = Path(__file__).resolve().parent / "openapi.yaml"


@functools.cache
def schema_text() -> str:
    return SCHEMA_PATH.read_text(encoding="utf-8")


@functools.cache
def schema() -> dict[str, Any]:
    return yaml.safe_load(schema_text())


@api_view
@methods("GET")
def api_schema(request: HttpRequest) -> HttpResponse:
    """The OpenAPI document as JSON, or as the YAML file itself with ?format=yaml."""
    output = request.GET.get("format", "json")
    if output == "yaml":
        return HttpResponse(schema_text(), content_type="application/yaml; charset=utf-8")
    if output != "json":
        raise ApiError(400, "invalid_format", "format must be json or yaml.", fields={"format": ["Unknown format."]})
    return json_response(schema())


@api_view
@methods("GET")
def api_docs(request: HttpRequest) -> HttpResponse:
    """Swagger UI rendering /api/schema/, from vendored assets (project/static/vendor)."""
    return render(request, "api_docs.html")
