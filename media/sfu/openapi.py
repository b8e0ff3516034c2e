"""The OpenAPI 3.0 document of the local SFU's API (served at GET /openapi.json).

It describes what this server answers, status by status, in Cloudflare Realtime's shapes
(docs/realtime-api.md): request bodies as `models.py` decodes them, and every response body the
handlers produce. Response objects are closed (`additionalProperties: false`) so that the
schema fuzz test (tests/integration/test_sfu_fuzz.py) notices when a handler and this
document drift apart; request objects are open, because unknown fields are ignored.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from .models import MAX_TRACKS_PER_REQUEST, SERVER_EVENTS_CHANNEL

__all__ = ["openapi_document"]

JSON = "application/json"
Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _string(**extra: Any) -> Schema:
    return {"type": "string", **extra}


def _closed(
    properties: dict[str, Schema], required: list[str] | None = None, **extra: Any
) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    schema.update(extra)
    return schema


def _open(properties: dict[str, Schema], required: list[str] | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    schema.update(extra)
    return schema


LOCATION = _string(enum=["local", "remote"])
STATUS = _string(enum=["active", "inactive", "initializing"])
ITEM_ERROR = {
    "errorCode": _string(
        description="Set only on an item that failed; the request still succeeded."
    ),
    "errorDescription": _string(),
}

SCHEMAS: dict[str, Schema] = {
    # -- requests (open: unknown fields are ignored) -------------------------------------
    "SessionDescription": _open(
        {"type": _string(enum=["offer", "answer"]), "sdp": _string(minLength=1)},
        ["type", "sdp"],
    ),
    "NewSessionRequest": _open({"sessionDescription": _ref("SessionDescription")}),
    "Simulcast": _open(
        {
            "preferredRid": _string(),
            "priorityOrdering": _string(enum=["none", "asciibetical"]),
            "ridNotAvailable": _string(enum=["none", "asciibetical"]),
        },
        description="Accepted and ignored: the local SFU carries audio only.",
    ),
    "TrackObject": _open(
        {
            "location": LOCATION,
            "mid": _string(
                description="The transceiver's mid; on a pull `#<trackName>` reuses the "
                "transceiver of this session's own published track."
            ),
            "sessionId": _string(description="The publisher's session (remote tracks)."),
            "trackName": _string(),
            "kind": _string(description="A hint when the SFU makes the offer."),
            "bidirectionalMediaStream": {"type": "boolean"},
            "simulcast": _ref("Simulcast"),
        },
        ["location"],
    ),
    "TracksRequest": _open(
        {
            "sessionDescription": _ref("SessionDescription"),
            "tracks": {
                "type": "array",
                "maxItems": MAX_TRACKS_PER_REQUEST,
                "items": _ref("TrackObject"),
            },
            "autoDiscover": {"type": "boolean"},
        },
        description="Push: an offer plus local tracks naming its mids (the SFU answers). Pull: "
        "remote tracks without an offer (the SFU offers; answer it with PUT renegotiate). "
        "tracks/new needs at least one track unless autoDiscover is set.",
    ),
    "RenegotiateRequest": _open(
        {"sessionDescription": _ref("SessionDescription")}, ["sessionDescription"]
    ),
    "CloseTrackObject": _open({"mid": _string(minLength=1)}, ["mid"]),
    "CloseTracksRequest": _open(
        {
            "sessionDescription": _ref("SessionDescription"),
            "tracks": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_TRACKS_PER_REQUEST,
                "items": _ref("CloseTrackObject"),
            },
            "force": {"type": "boolean"},
        },
        ["tracks"],
        description="Without force, sessionDescription carries the client's offer that stops the "
        "m-lines; the SFU answers. With force, no SDP is exchanged.",
    ),
    "DataChannelObject": _open(
        {
            "location": LOCATION,
            "dataChannelName": _string(minLength=1),
            "sessionId": _string(description="The publisher's session (remote channels)."),
            "ordered": {"type": "boolean"},
            "maxRetransmits": {"type": "integer", "minimum": 0},
            "maxPacketLifeTime": {"type": "integer", "minimum": 0},
            "waitForAck": {"type": "boolean"},
            "canReply": {"type": "boolean"},
        },
        ["location", "dataChannelName"],
    ),
    "DataChannelsRequest": _open(
        {
            "dataChannels": {
                "type": "array",
                "minItems": 1,
                "items": _ref("DataChannelObject"),
            }
        },
        ["dataChannels"],
    ),
    "CloseDataChannelsRequest": _open(
        {
            "dataChannels": {
                "type": "array",
                "minItems": 1,
                "items": _open({"id": {"type": "integer", "minimum": 0}}, ["id"]),
            }
        },
        ["dataChannels"],
    ),
    "EstablishDataChannelsRequest": _open(
        {
            "sessionDescription": _ref("SessionDescription"),
            "dataChannel": _open(
                {
                    "location": _string(enum=["remote"]),
                    "dataChannelName": _string(enum=[SERVER_EVENTS_CHANNEL]),
                }
            ),
        },
        description="Sets up the SCTP transport by pulling the SFU's server-events channel. "
        "Without an offer the SFU offers (answer it with PUT renegotiate).",
    ),
    "TurnCredentialsRequest": _open(
        {"ttl": {"type": "integer", "minimum": 1, "description": "Lifetime in seconds."}}
    ),
    # -- responses (closed: exactly what the handlers send) ------------------------------
    "Error": _closed(
        {"errorCode": _string(), "errorDescription": _string()}, ["errorCode", "errorDescription"]
    ),
    "SessionDescriptionOut": _closed(
        {"type": _string(enum=["offer", "answer"]), "sdp": _string()}, ["type", "sdp"]
    ),
    "NewSessionResponse": _closed(
        {"sessionId": _string(), "sessionDescription": _ref("SessionDescriptionOut")}, ["sessionId"]
    ),
    "TrackResult": _closed(
        {
            "mid": _string(description='"" when the item failed before a transceiver was chosen.'),
            "trackName": _string(),
            "sessionId": _string(),
            **ITEM_ERROR,
        },
        ["mid"],
    ),
    "TracksResponse": _closed(
        {
            "requiresImmediateRenegotiation": {"type": "boolean"},
            "tracks": {"type": "array", "items": _ref("TrackResult")},
            "sessionDescription": _ref("SessionDescriptionOut"),
        },
        ["requiresImmediateRenegotiation", "tracks"],
    ),
    "UpdateTracksResponse": _closed(
        {
            "requiresImmediateRenegotiation": {"type": "boolean"},
            "tracks": {
                "type": "array",
                "items": _closed(
                    {"mid": _string(), "trackName": _string(), "sessionId": _string()}
                ),
            },
        },
        ["requiresImmediateRenegotiation", "tracks"],
    ),
    "RenegotiateResponse": _closed({}),
    "SessionTrackState": _closed(
        {
            "location": LOCATION,
            "mid": _string(),
            "trackName": _string(),
            "sessionId": _string(),
            "status": STATUS,
        },
        ["location", "mid", "trackName", "status"],
    ),
    "SessionDataChannelState": _closed(
        {
            "location": LOCATION,
            "dataChannelName": _string(),
            "sessionId": _string(),
            "id": {"type": "integer"},
            "status": STATUS,
        },
        ["location", "dataChannelName", "id", "status"],
    ),
    "SessionStateResponse": _closed(
        {
            "tracks": {"type": "array", "items": _ref("SessionTrackState")},
            "dataChannels": {"type": "array", "items": _ref("SessionDataChannelState")},
        },
        ["tracks", "dataChannels"],
    ),
    "DataChannelResult": _closed(
        {
            "location": LOCATION,
            "dataChannelName": _string(),
            "sessionId": _string(),
            "id": {"type": "integer"},
            **ITEM_ERROR,
        },
        ["location", "dataChannelName"],
    ),
    "DataChannelsResponse": _closed(
        {"dataChannels": {"type": "array", "items": _ref("DataChannelResult")}}, ["dataChannels"]
    ),
    "EstablishDataChannelsResponse": _closed(
        {
            "dataChannel": _ref("DataChannelResult"),
            "requiresImmediateRenegotiation": {"type": "boolean"},
            "sessionDescription": _ref("SessionDescriptionOut"),
        },
        ["dataChannel", "requiresImmediateRenegotiation"],
    ),
    "IceServer": _closed(
        {
            "urls": {"type": "array", "items": _string()},
            "username": _string(),
            "credential": _string(),
        },
        ["urls"],
    ),
    "IceServersResponse": _closed(
        {"iceServers": {"type": "array", "items": _ref("IceServer")}}, ["iceServers"]
    ),
    "LegacyIceServersResponse": _closed(
        {"iceServers": _ref("IceServer")},
        ["iceServers"],
        description="The legacy endpoint returns iceServers as one object, not a list.",
    ),
}


def _error(description: str, *codes: str) -> dict[str, Any]:
    schema: Schema = {"allOf": [_ref("Error")]}
    if codes:
        schema["allOf"].append({"properties": {"errorCode": _string(enum=list(codes))}})
    return {"description": description, "content": {JSON: {"schema": schema}}}


RESPONSES: dict[str, Any] = {
    "DecodingError": _error(
        "The body is not JSON, not an object, or a field has the wrong type.", "decoding_error"
    ),
    "Unauthorized": _error(
        "Missing or wrong bearer token, or an unknown app or key id.", "unauthorized"
    ),
    "NotFound": _error("No such endpoint (for instance an empty path parameter).", "not_found"),
    "MethodNotAllowed": _error(
        "The path exists but not with this method; the Allow header lists the methods it takes.",
        "method_not_allowed",
    ),
    "InvalidParams": _error(
        "Well-typed but unusable values, or an unusable or out-of-turn session description "
        "(an offer or answer while another negotiation of the session is unanswered).",
        "invalid_params",
        "invalid_session_description",
    ),
    "SessionGone": _error(
        "The session does not exist or is gone: create a new one.", "session_error"
    ),
    "TooEarly": _error(
        "The session's peer connection did not connect within 5 s; retry later.", "session_error"
    ),
    "TooLarge": _error("The request body is larger than 1 MiB.", "invalid_params"),
}

_STATUS_RESPONSE = {
    "400": "DecodingError",
    "401": "Unauthorized",
    "404": "NotFound",
    "406": "InvalidParams",
    "410": "SessionGone",
    "413": "TooLarge",
    "425": "TooEarly",
}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": _string(minLength=1),
        "description": description,
    }


APP_ID = _path_param("appId", "The Realtime app id.")
SESSION_ID = _path_param("sessionId", "A session id returned by sessions/new.")
KEY_ID = _path_param("keyId", "The TURN key id.")


def _operation(
    operation_id: str,
    summary: str,
    ok: tuple[str, str | None, str],
    errors: str,
    *,
    body: str | None = None,
    body_required: bool = True,
    parameters: list[dict[str, Any]] | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """`ok` is (status, response schema or None for no body, description); `errors` lists
    the error statuses the handler can answer, space-separated."""
    status, schema, ok_description = ok
    success: dict[str, Any] = {"description": ok_description}
    if schema is not None:
        success["content"] = {JSON: {"schema": _ref(schema)}}
    responses: dict[str, Any] = {status: success}
    for code in errors.split():
        responses[code] = {"$ref": f"#/components/responses/{_STATUS_RESPONSE[code]}"}
    op: dict[str, Any] = {
        "operationId": operation_id,
        "summary": summary,
        "parameters": parameters or [],
        "responses": responses,
    }
    if description:
        op["description"] = description
    if body is not None:
        op["requestBody"] = {"required": body_required, "content": {JSON: {"schema": _ref(body)}}}
    return op


_SESSION = "/apps/{appId}/sessions/{sessionId}"
_TURN = "/turn/keys/{keyId}/credentials"
# Errors each kind of handler can answer: every body is decoded (400, 413), every request is
# authorized (401), a session lookup can fail (410), operations that need a connected peer
# wait up to 5 s for it (425), and an empty path parameter matches no route (404).
_BODY = "400 401 404 406 413"
_ON_SESSION = _BODY + " 410"
_NEEDS_PEER = _ON_SESSION + " 425"

PATHS: dict[str, Any] = {
    "/apps/{appId}/sessions/new": {
        "post": _operation(
            "newSession",
            "Create a session, optionally answering the client's first offer",
            (
                "201",
                "NewSessionResponse",
                "Created; sessionDescription is the SFU's answer when an offer was sent.",
            ),
            _BODY,
            body="NewSessionRequest",
            body_required=False,
            parameters=[
                APP_ID,
                {
                    "name": "thirdparty",
                    "in": "query",
                    "schema": {"type": "boolean"},
                    "description": "Accepted for compatibility; no effect here.",
                },
                {
                    "name": "correlationId",
                    "in": "query",
                    "schema": _string(),
                    "description": "A diagnostic label; not an idempotency key.",
                },
            ],
        )
    },
    _SESSION + "/tracks/new": {
        "post": _operation(
            "newTracks",
            "Push (publish) or pull (subscribe) tracks",
            (
                "200",
                "TracksResponse",
                "Done; single items may carry errorCode (not_found_track_error "
                'with mid "" when the publisher is not sending yet: retry).',
            ),
            _NEEDS_PEER,
            body="TracksRequest",
            parameters=[APP_ID, SESSION_ID],
        )
    },
    _SESSION + "/renegotiate": {
        "put": _operation(
            "renegotiate",
            "Answer the SFU's pending offer",
            ("200", "RenegotiateResponse", "The answer is applied."),
            _ON_SESSION,
            body="RenegotiateRequest",
            parameters=[APP_ID, SESSION_ID],
        )
    },
    _SESSION + "/tracks/update": {
        "put": _operation(
            "updateTracks",
            "Change track preferences (accepted as no-ops for audio)",
            ("200", "UpdateTracksResponse", "Echoes the tracks."),
            _ON_SESSION,
            body="TracksRequest",
            parameters=[APP_ID, SESSION_ID],
        )
    },
    _SESSION + "/tracks/close": {
        "put": _operation(
            "closeTracks",
            "Close pushed or pulled tracks by mid",
            (
                "200",
                "TracksResponse",
                "Done; an unknown or already closed mid carries close_track_error.",
            ),
            _NEEDS_PEER,
            body="CloseTracksRequest",
            parameters=[APP_ID, SESSION_ID],
            description="Closing the first m-line of the BUNDLE group ends the session (410): "
            "the client must create a new session.",
        )
    },
    _SESSION: {
        "get": _operation(
            "getSession",
            "The session's tracks and datachannels with their status",
            ("200", "SessionStateResponse", "The session's state."),
            "401 404 410",
            parameters=[APP_ID, SESSION_ID],
        )
    },
    _SESSION + "/datachannels/establish": {
        "post": _operation(
            "establishDataChannels",
            "Set up the datachannel transport by pulling the server-events channel",
            (
                "200",
                "EstablishDataChannelsResponse",
                "The server-events channel; an SFU offer when "
                "requiresImmediateRenegotiation is true, else the answer to the client's offer.",
            ),
            _NEEDS_PEER,
            body="EstablishDataChannelsRequest",
            body_required=False,
            parameters=[APP_ID, SESSION_ID],
        )
    },
    _SESSION + "/datachannels/new": {
        "post": _operation(
            "newDataChannels",
            "Publish (local) or subscribe to (remote) named datachannels",
            ("200", "DataChannelsResponse", "Done; single items may carry errorCode."),
            _NEEDS_PEER,
            body="DataChannelsRequest",
            parameters=[APP_ID, SESSION_ID],
        )
    },
    _SESSION + "/datachannels/close": {
        "put": _operation(
            "closeDataChannels",
            "Close datachannels by id",
            ("200", "DataChannelsResponse", "Done; an unknown id carries close_datachannel_error."),
            _ON_SESSION,
            body="CloseDataChannelsRequest",
            parameters=[APP_ID, SESSION_ID],
        )
    },
    _TURN + "/generate-ice-servers": {
        "post": _operation(
            "generateIceServers",
            "ICE servers for a client (the local SFU's STUN server)",
            ("201", "IceServersResponse", "iceServers as a list."),
            _BODY,
            body="TurnCredentialsRequest",
            body_required=False,
            parameters=[KEY_ID],
        )
    },
    _TURN + "/generate": {
        "post": _operation(
            "generateIceServersLegacy",
            "Legacy form of generate-ice-servers",
            ("201", "LegacyIceServersResponse", "iceServers as one object."),
            _BODY,
            body="TurnCredentialsRequest",
            body_required=False,
            parameters=[KEY_ID],
        )
    },
    _TURN + "/{username}/revoke": {
        "post": _operation(
            "revokeCredentials",
            "Revoke TURN credentials (nothing to revoke locally)",
            ("204", None, "Revoked; no body."),
            "401 404",
            parameters=[KEY_ID, _path_param("username", "The credential's username.")],
        )
    },
}

DESCRIPTION = """\
A local SFU that serves Cloudflare Realtime's HTTP API for tests and local deployments.

Every path is served with and without the `/v1` prefix. Request bodies are decoded as JSON
whatever the Content-Type (or none) and may be empty where no field is required; unknown
query parameters and unknown body fields are ignored. Every response but 204 has a JSON
body; errors are `{"errorCode", "errorDescription"}`. A 200 can carry failed items, each
with its own errorCode. A path that exists answers other methods with 405 (see
components/responses/MethodNotAllowed) and an unknown path answers 404, both as JSON.
Operations on one session are serialized; one that needs a new negotiation while the SFU's
offer is unanswered gets 406.
"""


@cache
def _document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Switchboard local SFU (Cloudflare Realtime API)",
            "version": "1.0",
            "description": DESCRIPTION,
        },
        "servers": [{"url": "/v1", "description": "relative to this document's host"}],
        "security": [{"bearer": []}],
        "paths": PATHS,
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The app secret (sessions) or the TURN key secret (turn).",
                }
            },
            "schemas": SCHEMAS,
            "responses": RESPONSES,
        },
    }


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the document (callers may change it)."""
    return copy.deepcopy(_document())
