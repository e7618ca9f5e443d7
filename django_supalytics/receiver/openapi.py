"""The OpenAPI 3.1 description of ``POST /v1/events`` as the mock implements it."""

from __future__ import annotations

from typing import Any

from ..validation import (
    METADATA_KEY_MAX_LENGTH,
    METADATA_MAX_KEYS,
    METADATA_VALUE_MAX_LENGTH,
    VISITOR_ID_MAX_LENGTH,
)

ERROR_CODES = [
    "missing_api_key",
    "invalid_api_key",
    "invalid_json",
    "unsupported_media_type",
    "payload_too_large",
    "invalid_name",
    "invalid_visitor_id",
    "invalid_metadata",
    "unknown_field",
    "rate_limited",
    "method_not_allowed",
    "invalid_content_length",
    "invalid_idempotency_key",
]

#: Text without NUL (``jsonb`` refuses it); lone surrogates are refused too, but JSON Schema
#: cannot say so.
_NO_NUL = "^[^\\u0000]*$"

_RATE_HEADERS = {
    name: {"schema": {"type": "integer"}, "description": text}
    for name, text in [
        ("X-RateLimit-Limit", "requests allowed per second for this key"),
        ("X-RateLimit-Remaining", "requests left in the current one-second window"),
        ("X-RateLimit-Reset", "Unix time, in whole seconds, at which the window resets"),
    ]
}


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def schema(server_url: str = "/") -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Supalytics events (mock receiver)", "version": "1"},
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Event": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "pattern": "^[a-z0-9_-]{1,64}$"},
                        "visitor_id": {
                            "type": "string",
                            "pattern": f"^[!-~]{{1,{VISITOR_ID_MAX_LENGTH}}}$",
                        },
                        "metadata": {
                            "type": "object",
                            "maxProperties": METADATA_MAX_KEYS,
                            "propertyNames": {
                                "minLength": 1,
                                "maxLength": METADATA_KEY_MAX_LENGTH,
                                "pattern": _NO_NUL,
                            },
                            "additionalProperties": {
                                "oneOf": [
                                    {
                                        "type": "string",
                                        "maxLength": METADATA_VALUE_MAX_LENGTH,
                                        "pattern": _NO_NUL,
                                    },
                                    {"type": "number"},
                                    {"type": "boolean"},
                                ]
                            },
                        },
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["success", "error"],
                    "properties": {
                        "success": {"const": False},
                        "error": {
                            "type": "object",
                            "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string", "enum": ERROR_CODES},
                                "message": {"type": "string"},
                                "field": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
        "paths": {
            "/v1/events": {
                "post": {
                    "operationId": "trackEvent",
                    "summary": "Record one event",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "pattern": "^[ -~]{0,255}$"},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Event"}}
                        },
                    },
                    "responses": {
                        "200": {
                            "description": "accepted (or replayed: Idempotent-Replayed: true)",
                            "headers": _RATE_HEADERS,
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {"success": {"const": True}},
                                    }
                                }
                            },
                        },
                        "400": _error_response(
                            "invalid JSON, field, unknown field, Content-Length or Idempotency-Key"
                        ),
                        "401": _error_response("missing or unknown API key"),
                        "405": _error_response("method not allowed"),
                        "413": _error_response("body over 16 KiB"),
                        "415": _error_response("not application/json"),
                        "429": _error_response("over the rate limit; see Retry-After"),
                    },
                }
            }
        },
    }
