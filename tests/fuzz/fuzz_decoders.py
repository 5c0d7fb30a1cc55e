"""Coverage-guided fuzzing of every decoder of outside bytes, with atheris (libFuzzer).

Not part of the test run (pytest collects no file here); how to run it for
hours and how to replay a crash: docs/fuzzing.md. The hypothesis tests in
tests/unit/test_decoders_property.py check the same promise in CI: each
decoder accepts its input or raises its own documented refusal. Any other
exception is a crash, and libFuzzer writes the input to ``crash-<sha1>``.

    python tests/fuzz/fuzz_decoders.py TARGET [libFuzzer options] [CORPUS_DIR ...]
    python tests/fuzz/fuzz_decoders.py --list
    python tests/fuzz/fuzz_decoders.py --seed DIR TARGET   # the vectors as a first corpus
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl

import atheris

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
VECTORS = ROOT / "tests" / "vectors"

with atheris.instrument_imports(include=["sync", "node", "broker"]):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from broker import TopicError
    from broker.topics import parse_event_topic
    from node.buttons import parse_press
    from node.mesh.carry import shrink_reply
    from node.portal import intake
    from sync import EventError, KeyPair, SyncError, decode_event, fastpath, mesh, sealed
    from sync.canonical import parse_json
    from sync.enrolment import parse_request
    from sync.exchange import Ack, BatchMeta, ExchangeError, SyncReply


def _keys(offset: int) -> KeyPair:
    return KeyPair(Ed25519PrivateKey.from_private_bytes(bytes(range(offset, offset + 32))),
                   X25519PrivateKey.from_private_bytes(bytes(range(offset + 32, offset + 64))))


NODE, CENTRAL = _keys(0), _keys(64)  # the keys of tests/vectors (README.md there)
POINTS = {"kompasplein": "Kompasplein", "speeltuin": "Speeltuin De Klimboom"}


def _json(data: bytes) -> None:
    with contextlib.suppress(EventError):
        parse_json(data, 1 << 20)


def _event(data: bytes) -> None:
    with contextlib.suppress(EventError):
        decode_event(data)


def _mesh(data: bytes) -> None:
    with contextlib.suppress(mesh.MeshDocError):
        mesh.parse(data)


def _meta(data: bytes) -> None:
    with contextlib.suppress(ExchangeError):
        BatchMeta.parse(data)


def _reply(data: bytes) -> None:
    try:
        reply = SyncReply.parse(data)
    except ExchangeError:
        shrink_reply(data)  # a carrier shrinks whatever central sent
        return
    with contextlib.suppress(ExchangeError):
        Ack.verify(reply.ack, CENTRAL.signing_public)


def _enrol(data: bytes) -> None:
    with contextlib.suppress(EventError):
        parse_request(parse_json(data, 64 * 1024), need_code=True)


def _batch(data: bytes) -> None:
    with contextlib.suppress(sealed.BatchError):
        sealed.open_batch(data, NODE.signing_public, CENTRAL.encryption)


def _frames(data: bytes) -> None:
    payload = sealed.Payload([(data, bytes(64))], {})
    for read in (lambda: list(sealed.iter_events(payload)), lambda: sealed.iter_lean(payload)):
        with contextlib.suppress(sealed.BatchError):
            read()
    fastpath.report(data, bytes(64))  # None is its refusal


def _payload(data: bytes) -> None:
    with contextlib.suppress(sealed.BatchError):
        sealed.decode_payload(data, 2)


def _mqtt(data: bytes) -> None:
    topic, _, payload = data.partition(b"\n")
    with contextlib.suppress(TopicError, UnicodeDecodeError):
        parse_event_topic(topic.decode("utf-8", "surrogatepass"))
    with contextlib.suppress(SyncError):
        decode_event(payload)


def _press(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        parse_press(data)


def _report(data: bytes) -> None:
    with contextlib.suppress(intake.Refused):
        intake.check(intake.from_json(data, 16_384), POINTS)


def _form(data: bytes) -> None:
    # As the form arrives: urlencoded, decoded with replacement characters.
    text = data.decode("latin-1")
    values = dict(parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="replace"))
    with contextlib.suppress(intake.Refused):
        intake.check(intake.from_form(values, "nl"), POINTS)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "json": _json, "event": _event, "mesh": _mesh, "meta": _meta, "reply": _reply,
    "enrol": _enrol, "batch": _batch, "frames": _frames, "payload": _payload, "mqtt": _mqtt,
    "press": _press, "report": _report, "form": _form,
}


def seeds(target: str) -> list[bytes]:
    """The fixed test vectors that fit ``target``: a first corpus near valid input."""
    mesh_docs = [v.encode() for v in
                 json.loads((VECTORS / "mesh-v1.json").read_text()).values()]
    events = [(VECTORS / n).read_bytes() for n in ("event-v1-report.wire.bin",
                                                   "event-v1-alert.wire.bin")]
    report = b'{"category":"nuisance","text":"Harde muziek","place":{"point":"speeltuin"}}'
    by_target = {
        "mesh": mesh_docs, "event": events,
        "frames": [(VECTORS / "event-v1-report.signing.bin").read_bytes()[14:]],
        "batch": [(VECTORS / "batch-v1.bin").read_bytes()],
        "meta": [(VECTORS / "uplink-meta-v1.json").read_bytes()],
        "reply": [(VECTORS / "uplink-reply-v1.json").read_bytes()],
        "mqtt": [b"bart/v1/escamp-zandloper/public/alert\n" + events[1]],
        "press": [b'{"v":1,"id":"press-0001","button":"speeltuin","kind":"alarm",'
                  b'"ts":1795904700123}'],
        "report": [report], "form": [b"category=nuisance&text=Harde+muziek&place_point="],
        "enrol": [b'{"v":1,"node":"n1","code":"K7FQ-3QXA-M2PD-W9RT","signing_pub":"",'
                  b'"encryption_pub":"","csr_pem":"","version":"1.0"}'],
    }
    return by_target.get(target, [*events, *mesh_docs, report])


def main(argv: list[str]) -> None:
    if "--list" in argv:
        print("\n".join(TARGETS))
        return
    if len(argv) > 3 and argv[1] == "--seed":
        folder, target = Path(argv[2]), argv[3]
        folder.mkdir(parents=True, exist_ok=True)
        for i, seed in enumerate(seeds(target)):
            (folder / f"seed-{i}").write_bytes(seed)
        print(f"{len(seeds(target))} seeds for {target} in {folder}")
        return
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: {argv[0]} TARGET [libFuzzer options] [CORPUS ...]; "
                 f"targets: {', '.join(TARGETS)}")
    target = TARGETS[argv[1]]
    atheris.Setup([argv[0], *argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
