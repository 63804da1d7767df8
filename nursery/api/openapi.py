"""The OpenAPI 3.1 document served at /openapi.json.

Request bodies come from the pydantic input models (one source of truth with validation);
responses are described here, next to the routes' status codes.
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from nursery.config import Settings
from nursery.service import inputs

_ERROR = {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    names = {400: "malformed JSON", 401: "no, bad or revoked token", 404: "not found",
             409: "revision conflict", 413: "body too large", 422: "invalid fields",
             429: "rate limited", 503: "a dependency is down"}
    responses = {str(s): _json(_ERROR, names[s]) for s in statuses}
    for status in {429, 503} & set(statuses):
        responses[str(status)]["headers"] = {"Retry-After": {
            "description": "seconds to wait before trying again", "required": True,
            "schema": {"type": "string", "pattern": "^[0-9]+$"}}}
    return responses


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(model.__name__)}}}


_AUTH: list[dict[str, list[str]]] = [{"bearer": []}]
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 200}}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


_TODO = {
    "type": "object",
    "required": ["id", "title", "notes", "done", "due", "tags", "rev", "created_at", "updated_at"],
    "properties": {
        "id": {"type": "string"},
        "title": {"type": "string"},
        "notes": {"type": "string"},
        "done": {"type": "boolean"},
        "due": {"type": ["string", "null"], "format": "date-time"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "rev": {"type": "integer"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
    },
}
_SESSION = {
    "type": "object",
    "required": ["id", "device", "created_at", "last_seen_at", "current", "online"],
    "properties": {
        "id": {"type": "string"},
        "device": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"},
        "last_seen_at": {"type": "string", "format": "date-time"},
        "current": {"type": "boolean"},
        "online": {"type": "boolean"},
    },
}
_USER = {
    "type": "object",
    "required": ["id", "email", "created_at"],
    "properties": {"id": {"type": "string"}, "email": {"type": "string"},
                   "created_at": {"type": "string", "format": "date-time"}},
}
_CHANGE = {
    "type": "object",
    "required": ["rev", "op"],
    "properties": {"rev": {"type": "integer"}, "op": {"enum": ["upsert", "delete"]},
                   "todo": _ref("Todo"), "id": {"type": "string"}},
}
_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "message", "details"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"}, "details": {}},
    }},
}
_LOGIN = {"type": "object", "required": ["user", "session", "token"],
          "properties": {"user": _ref("User"), "session": _ref("Session"), "token": {"type": "string"}}}
_NO_CONTENT = {"description": "done"}
_ACTIVITY_ENTRY = {
    "type": "object",
    "required": ["id", "kind", "at", "session", "device", "instance", "todo", "done", "details"],
    "properties": {
        "id": {"type": "string"},
        "kind": {"enum": ["login", "logout", "revoke", "todo.create", "todo.update", "todo.delete"]},
        "at": {"type": "string", "format": "date-time"},
        "session": {"type": ["string", "null"], "description": "the session (device) that acted"},
        "device": {"type": "string"},
        "instance": {"type": "string", "description": "the instance that served the request"},
        "todo": {"type": ["string", "null"]},
        "done": {"type": ["boolean", "null"], "description": "the done value a todo write set"},
        "details": {"type": "object"},
    },
}
_DAY_FIGURES = {
    "type": "object",
    "required": ["date", "created", "completed", "active_devices"],
    "properties": {
        "date": {"type": "string", "format": "date", "description": "a UTC day"},
        "created": {"type": "integer", "description": "todos created"},
        "completed": {"type": "integer", "description": "distinct todos marked done"},
        "active_devices": {"type": "integer", "description": "distinct sessions that acted"},
    },
}


def openapi_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Todo": _TODO, "Session": _SESSION, "User": _USER, "Change": _CHANGE,
        "Error": _ERROR_SCHEMA, "Login": _LOGIN, "ActivityEntry": _ACTIVITY_ENTRY,
        "DayFigures": _DAY_FIGURES,
    }
    for model in (inputs.Credentials, inputs.NewTodo, inputs.TodoChanges):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    # Registering asks more than logging in does (the service checks it): an address, and the
    # shortest password allowed (NURSERY_PASSWORD_MIN_LENGTH; its default here).
    registration = copy.deepcopy(schemas["Credentials"])
    registration["title"] = "Registration"
    registration["properties"]["email"]["format"] = "email"
    registration["properties"]["password"]["minLength"] = Settings().password_min_length
    schemas["Registration"] = registration
    todo_response = _json({"type": "object", "required": ["todo"], "properties": {"todo": _ref("Todo")}})
    return {
        "openapi": "3.1.0",
        "info": {"title": "nursery", "version": "1"},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "paths": {
            "/api/auth/register": {"post": {
                "summary": "Create an account and log this device in",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": _ref("Registration")}}},
                "responses": {"201": _json(_ref("Login"), "registered"), **_errors(400, 409, 413, 422, 429, 503)},
            }},
            "/api/auth/login": {"post": {
                "summary": "Log a device in",
                "requestBody": _body(inputs.Credentials),
                "responses": {"200": _json(_ref("Login")), **_errors(400, 401, 413, 422, 429, 503)},
            }},
            "/api/auth/logout": {"post": {
                "summary": "Revoke the current session", "security": _AUTH,
                "responses": {"204": _NO_CONTENT, **_errors(401, 503)},
            }},
            "/api/me": {"get": {
                "summary": "The user", "security": _AUTH,
                "responses": {"200": _json({"type": "object", "required": ["user"], "properties": {
                    "user": _ref("User")}}), **_errors(401, 503)},
            }},
            "/api/sessions": {
                "get": {
                    "summary": "The user's live sessions (devices)", "security": _AUTH,
                    "responses": {"200": _json({"type": "object", "required": ["sessions"], "properties": {
                        "sessions": {"type": "array", "items": _ref("Session")}}}), **_errors(401, 503)},
                },
                "delete": {
                    "summary": "Revoke every session but the current one", "security": _AUTH,
                    "responses": {"200": _json({"type": "object", "required": ["revoked"], "properties": {
                        "revoked": {"type": "integer", "minimum": 0}}}), **_errors(401, 503)},
                },
            },
            "/api/sessions/{id}": {"delete": {
                "summary": "Revoke one session", "security": _AUTH, "parameters": [_ID],
                "responses": {"204": _NO_CONTENT, **_errors(401, 404, 503)},
            }},
            "/api/todos": {
                "get": {
                    "summary": "List todos, oldest first, keyset-paginated", "security": _AUTH,
                    "parameters": [
                        _query("done", {"type": "string", "enum": ["true", "false"]}),
                        _query("q", {"type": "string", "maxLength": 200}),
                        _query("limit", {"type": "integer", "minimum": 1, "maximum": 200}),
                        _query("cursor", {"type": "string", "maxLength": 200}),
                    ],
                    "responses": {"200": _json({"type": "object", "required": ["items", "next_cursor", "rev"], "properties": {
                        "items": {"type": "array", "items": _ref("Todo")},
                        "next_cursor": {"type": ["string", "null"]}, "rev": {"type": "integer"}}}),
                        **_errors(401, 422, 503)},
                },
                "post": {
                    "summary": "Create a todo", "security": _AUTH, "parameters": [_IDEMPOTENCY],
                    "requestBody": _body(inputs.NewTodo),
                    "responses": {"201": todo_response, **_errors(400, 401, 413, 422, 429, 503)},
                },
            },
            "/api/todos/{id}": {
                "get": {"summary": "One todo", "security": _AUTH, "parameters": [_ID],
                        "responses": {"200": todo_response, **_errors(401, 404, 503)}},
                "patch": {
                    "summary": "Change a todo; if_rev makes it conditional", "security": _AUTH,
                    "parameters": [_ID, _IDEMPOTENCY], "requestBody": _body(inputs.TodoChanges),
                    "responses": {"200": todo_response, **_errors(400, 401, 404, 409, 413, 422, 429, 503)},
                },
                "delete": {
                    "summary": "Delete a todo (a tombstone keeps its revision)", "security": _AUTH,
                    "parameters": [_ID, _IDEMPOTENCY, _query("if_rev", {"type": "integer", "minimum": 0})],
                    "responses": {"204": _NO_CONTENT, **_errors(401, 404, 409, 422, 429, 503)},
                },
            },
            "/api/changes": {"get": {
                "summary": "Every change after a revision, in revision order", "security": _AUTH,
                "parameters": [_query("since", {"type": "integer", "minimum": 0}),
                               _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000})],
                "responses": {"200": _json({"type": "object", "required": ["changes", "rev", "more"], "properties": {
                    "changes": {"type": "array", "items": _ref("Change")},
                    "rev": {"type": "integer"}, "more": {"type": "boolean"}, "reset": {"type": "boolean"}}}),
                    **_errors(401, 422, 503)},
            }},
            "/api/activity": {"get": {
                "summary": "The caller's own audit trail (logins, logouts, revocations, todo"
                           " changes), newest first", "security": _AUTH,
                "parameters": [_query("limit", {"type": "integer", "minimum": 1, "maximum": 200})],
                "responses": {"200": _json({"type": "object", "required": ["entries"], "properties": {
                    "entries": {"type": "array", "items": _ref("ActivityEntry")}}}),
                    **_errors(401, 422, 503)},
            }},
            "/api/analytics/summary": {"get": {
                "summary": "Per UTC day up to today: todos created and completed, active devices",
                "security": _AUTH,
                "parameters": [_query("days", {"type": "integer", "minimum": 1, "maximum": 366})],
                "responses": {"200": _json({"type": "object", "required": ["timezone", "from", "to", "days", "totals"], "properties": {
                    "timezone": {"const": "UTC"},
                    "from": {"type": "string", "format": "date"},
                    "to": {"type": "string", "format": "date"},
                    "days": {"type": "array", "items": _ref("DayFigures")},
                    "totals": {"type": "object", "properties": {
                        "created": {"type": "integer"}, "completed": {"type": "integer"}}}}}),
                    **_errors(401, 422, 503)},
            }},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _json({"type": "object"})}}},
            "/readyz": {"get": {"summary": "Readiness", "responses": {
                "200": _json({"type": "object"}), **_errors(503)}}},
        },
    }
