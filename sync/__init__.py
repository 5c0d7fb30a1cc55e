"""The Bart protocol: events, canonical encoding, keys and signatures.

Pure code: no sockets, no files except key files. Everything that travels
between a node, its peers and central is defined here.
"""

from .bodies import (
    ACK_ACTIONS,
    ALERT_SOURCES,
    AUDIENCES,
    CATEGORIES,
    SEVERITIES,
    validate_body,
)
from .canonical import canonical_bytes, parse_json
from .errors import (
    BadSignature,
    EventError,
    EventTooLarge,
    InsecureKeyFile,
    InvalidField,
    KeyError_,
    SyncError,
    UnknownOrigin,
    UnknownVersion,
)
from .event import (
    EVENT_VERSION,
    MAX_EVENT_BYTES,
    STREAMS,
    Event,
    decode_event,
    event_from_dict,
    make_event,
    verify_event,
)
from .ids import UUIDv7Factory, new_id, uuid7_time_ms
from .keys import KeyPair, fingerprint, verify_signature
from .text import clean_text

__all__ = [
    "ACK_ACTIONS",
    "ALERT_SOURCES",
    "AUDIENCES",
    "CATEGORIES",
    "EVENT_VERSION",
    "MAX_EVENT_BYTES",
    "SEVERITIES",
    "STREAMS",
    "BadSignature",
    "Event",
    "EventError",
    "EventTooLarge",
    "InsecureKeyFile",
    "InvalidField",
    "KeyError_",
    "KeyPair",
    "SyncError",
    "UUIDv7Factory",
    "UnknownOrigin",
    "UnknownVersion",
    "canonical_bytes",
    "clean_text",
    "decode_event",
    "event_from_dict",
    "fingerprint",
    "make_event",
    "new_id",
    "parse_json",
    "uuid7_time_ms",
    "validate_body",
    "verify_event",
    "verify_signature",
]
