"""Central's ingest checks for a whole batch at once: the batch of reports
decoded and re-encoded in one pass (``sync.fastpath.reports``) and the ids and
receipts checked in one pass (``sync.sealed.all_uuid7`` / ``all_receipts``),
each held to the outcome of the per-frame path and of the patterns."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_sync_sealed import TEXT_VARIANTS, _outcome, _status_frame, _unsigned, events

from sync import sealed

# -- the batch of reports taken at once (sync.fastpath.reports) -------------------------------

def _full(p: sealed.Payload) -> list[tuple[object, ...]]:
    return [(e.id, e.origin, e.stream, e.seq, e.ts, e.kind, e.body_json().decode(), e.sig,
             _unsigned(e)) for e in sealed.iter_events(p, clean=False)]


def test_the_structs_declare_their_fields_in_sorted_order() -> None:
    # The canonical check encodes without sorting: declaration order must be sorted.
    from sync import fastpath

    for struct_type in (fastpath._Report, fastpath._ReportBody, fastpath._Place):
        fields = struct_type.__struct_fields__
        assert list(fields) == sorted(fields), struct_type


def test_a_batch_of_reports_is_taken_at_once_with_the_fields_of_the_general_path() -> None:
    from sync import fastpath

    payload = sealed.Payload.of(events(n=50))
    taken = fastpath.reports(payload.frames)
    assert taken is not None
    assert taken[0] == _full(payload) == sealed.iter_lean(payload)
    assert taken[1] == ["K7F-3QX"] * 50


@pytest.mark.parametrize("text", TEXT_VARIANTS)
def test_the_batch_and_frame_paths_agree_on_text_in_any_position(text: str) -> None:
    # The altered report first, last, and among a status event (frame by frame).
    ev = events(n=1)[0]
    bad = (_unsigned(ev).replace("Harde muziek 0 — café".encode(),
                                 text.encode("utf-8", "surrogatepass")), ev.sig)
    others = [(_unsigned(e), e.sig) for e in events(n=3, start=2)]
    for frames in ([bad, *others], [*others, bad], [_status_frame(b'"ok"'), bad, *others]):
        payload = sealed.Payload(frames, {})
        full = _outcome(_full, payload)
        lean = _outcome(sealed.iter_lean, payload)
        assert lean == full, frames


def test_frames_that_split_or_join_reports_are_not_taken_at_once() -> None:
    # Joined with commas, these frames read as the very same JSON array as two
    # good reports; each frame alone is not one report.
    from sync import fastpath

    a, b = (_unsigned(e) for e in events(n=2))
    sig = events(n=1)[0].sig
    cut = a.index(b',"id":"')
    for frames in ([(a[:cut], sig), (a[cut + 1:] + b"," + b, sig)],  # as many as reports
                   [(a[:cut], sig), (a[cut + 1:], sig), (b, sig)],   # one report in two
                   [(a + b"," + b, sig), (b"", sig)],                 # two in one, one empty
                   [(a + b"," + b[:10], sig), (b[11:], sig)]):         # a cut in the middle
        assert fastpath.reports(frames) is None, frames
        payload = sealed.Payload(frames, {})
        assert _outcome(sealed.iter_lean, payload)[0] == "BatchMalformed"
        assert _outcome(sealed.iter_lean, payload) == _outcome(_full, payload)


def test_a_report_out_of_canonical_order_in_a_batch_is_refused() -> None:
    evs = events(n=3)
    frames = [(_unsigned(e), e.sig) for e in evs]
    swapped = _unsigned(evs[1]).replace(b'"kind":"report","origin":"escamp-kleine-wereld"',
                                        b'"origin":"escamp-kleine-wereld","kind":"report"')
    assert swapped != frames[1][0]
    frames[1] = (swapped, evs[1].sig)
    payload = sealed.Payload(frames, {})
    assert _outcome(sealed.iter_lean, payload) == _outcome(_full, payload)
    assert _outcome(sealed.iter_lean, payload)[0] == "BatchMalformed"


# -- ids and receipts checked for a whole batch at once ----------------------------------------

_GOOD_ID = "019ac8f2-6d5b-7a3c-8e1f-000000000001"


def _id_variants() -> list[str]:
    out = []
    for pos in range(len(_GOOD_ID)):
        for ch in "07889abfAF-gz\n é":
            out.append(_GOOD_ID[:pos] + ch + _GOOD_ID[pos + 1:])
    return [*out, _GOOD_ID[:-1], _GOOD_ID + "0", "", _GOOD_ID.upper()]


@pytest.mark.parametrize("where", [0, 1, 4])
def test_all_uuid7_agrees_with_the_pattern_for_each_altered_character(where: int) -> None:
    from sync.event import UUID7

    good = [f"019ac8f2-6d5b-7a3c-8e1f-{i:012d}" for i in range(5)]
    assert sealed.all_uuid7(good)
    for variant in _id_variants():
        ids = [*good]
        ids[where] = variant
        expected = all(UUID7.fullmatch(i) for i in ids)
        assert sealed.all_uuid7(ids) == bool(expected), variant


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_id_variants()),
                          st.text(alphabet="0123456789abcdef-7\n", min_size=35, max_size=37)),
                min_size=1, max_size=6))
def test_all_uuid7_never_passes_what_the_pattern_refuses(ids: list[str]) -> None:
    from sync.event import UUID7

    assert sealed.all_uuid7(ids) == all(UUID7.fullmatch(i) for i in ids)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="ABHIJNOPZ0129-\né", min_size=6, max_size=8),
                min_size=1, max_size=6))
def test_all_receipts_agrees_with_the_pattern(receipts: list[str]) -> None:
    from sync.bodies import RECEIPT

    assert sealed.all_receipts(receipts) == all(RECEIPT.fullmatch(r) for r in receipts)
    assert sealed.all_receipts(["K7F-3QX", "ABC-229"])
