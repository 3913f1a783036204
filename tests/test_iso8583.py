"""The ISO 8583 codec: builders round-trip, framing survives any chunking, bad input is named."""

from __future__ import annotations

import copy
import itertools
import struct
from datetime import datetime

import iso8583 as pyiso
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from iso8583.specs import default_ascii

from harness.protocols import iso8583 as iso
from harness.protocols.cards import luhn_ok, mask_pan, with_luhn

PAN = with_luhn("476173000000001")
WHEN = datetime(2026, 3, 14, 15, 9, 26)
TID = "29110001"
MID = "POSHILMERCHANT1"


def sale(amount: int = 1234, stan: int = 42) -> dict[str, str]:
    return iso.sale_request(PAN, "3012", amount, 978, stan, TID, MID, WHEN)


def round_trip(msg: dict[str, str]) -> dict[str, str]:
    framed = iso.encode(msg)
    (length,) = struct.unpack(">H", framed[:2])
    assert length == len(framed) - 2
    return iso.decode(framed[2:])


def test_sale_request_has_the_documented_fields() -> None:
    msg = sale()
    assert msg == {
        "t": "0200",
        "2": PAN,
        "3": "000000",
        "4": "000000001234",
        "11": "000042",
        "12": "150926",
        "13": "0314",
        "14": "3012",
        "22": "051",
        "25": "00",
        "41": TID,
        "42": MID,
        "49": "978",
    }
    assert round_trip(msg) == msg


def test_reversal_request_copies_the_original_and_names_it_in_field_90() -> None:
    original = sale(amount=500, stan=7)
    for repeat, mti in ((False, "0400"), (True, "0420")):
        rev = iso.reversal_request(original, "98", repeat=repeat)
        assert rev["t"] == mti
        assert rev["11"] == "000007"  # the original STAN, CUP style
        assert rev["39"] == "98"
        assert rev["90"] == "0200" + "000007" + "0" * 32 and len(rev["90"]) == 42
        for key in ("2", "3", "4", "12", "13", "14", "22", "25", "41", "42", "49"):
            assert rev[key] == original[key]
        assert round_trip(rev) == rev
        assert iso.original_stan(rev) == 7


def test_reversal_request_works_from_a_request_stored_without_the_card() -> None:
    stored = {k: v for k, v in sale(stan=9).items() if k not in ("2", "14")}
    rev = iso.reversal_request(stored, "22", repeat=False)
    assert "2" not in rev and rev["39"] == "22"
    assert round_trip(rev) == rev


def test_reversal_request_refuses_bad_input() -> None:
    with pytest.raises(iso.Iso8583Error, match="field t"):
        iso.reversal_request(iso.signon_request(1, TID, WHEN), "98", repeat=False)
    with pytest.raises(iso.Iso8583Error, match="field 39"):
        iso.reversal_request(sale(), "098", repeat=False)


def test_signon_and_settlement_round_trip() -> None:
    signon = iso.signon_request(3, TID, WHEN)
    assert signon["t"] == "0800" and signon["70"] == "001" and signon["11"] == "000003"
    assert round_trip(signon) == signon
    settle = iso.settlement_request(4, TID, MID, 978, 3, 4500, WHEN)
    assert settle["t"] == "0500"
    assert settle["74"] == "0" * 10 and settle["86"] == "0" * 16
    assert settle["76"] == "0000000003" and settle["88"] == "0" * 12 + "4500"
    assert settle["97"] == "D" + "0" * 12 + "4500"
    assert round_trip(settle) == settle


@pytest.mark.parametrize(
    ("request_mti", "response_mti"),
    [("0200", "0210"), ("0400", "0410"), ("0420", "0430"), ("0500", "0510"), ("0800", "0810")],
)
def test_response_mti(request_mti: str, response_mti: str) -> None:
    assert iso.response_mti(request_mti) == response_mti


def test_response_for_echoes_key_fields_never_the_pan() -> None:
    request = sale()
    response = iso.response_for(request, "00", **{"37": "000000000001", "38": "123456"})
    assert response["t"] == "0210" and response["39"] == "00"
    for key in ("3", "4", "11", "12", "13", "41", "42", "49"):
        assert response[key] == request[key]
    assert response["37"] == "000000000001" and response["38"] == "123456"
    assert "2" not in response and "14" not in response
    assert round_trip(response) == response
    settle = iso.settlement_request(4, TID, MID, 978, 0, 0, WHEN)
    answer = iso.response_for(settle, "95", **{"76": "0" * 10, "88": "0" * 16})
    assert answer["t"] == "0510" and answer["39"] == "95" and "4" not in answer
    with pytest.raises(iso.Iso8583Error, match="field 39"):
        iso.response_for(request, "0")


def test_accessors() -> None:
    msg = sale(amount=990, stan=123456)
    assert iso.amount_of(msg) == 990
    assert iso.stan_of(msg) == 123456
    assert iso.original_stan(msg) == 123456
    assert iso.mti_of(msg) == "0200"
    with pytest.raises(iso.Iso8583Error, match="field 4: missing"):
        iso.amount_of({"t": "0800"})
    with pytest.raises(iso.Iso8583Error, match="field 90"):
        iso.original_stan({"t": "0400", "90": "0200"})


def test_encode_never_mutates_its_input() -> None:
    msg = sale()
    before = copy.deepcopy(msg)
    iso.encode(msg)
    assert msg == before  # pyiso8583 alone would have added "p"


def test_decodes_what_an_unmodified_pyiso8583_client_sends() -> None:
    msg = sale()
    raw, _ = pyiso.encode(copy.deepcopy(msg), default_ascii)
    assert iso.decode(bytes(raw)) == msg
    assert iso.encode(msg) == struct.pack(">H", len(raw)) + bytes(raw)


def test_summary_masks_the_card() -> None:
    line = iso.summary(sale())
    assert PAN not in line and mask_pan(PAN) in line and "stan=000042" in line


def test_frame_decoder_returns_bodies_across_any_chunking() -> None:
    messages = [sale(stan=n, amount=n * 100) for n in range(1, 6)]
    stream = b"".join(iso.encode(m) for m in messages)
    for size in (1, 2, 3, 7, 64, len(stream)):
        decoder = iso.FrameDecoder()
        bodies: list[bytes] = []
        for start in range(0, len(stream), size):
            bodies += decoder.feed(stream[start : start + size])
        assert [iso.decode(b) for b in bodies] == messages
        assert decoder.buffered == 0


def test_frame_decoder_keeps_a_truncated_frame_pending() -> None:
    framed = iso.encode(sale())
    decoder = iso.FrameDecoder()
    assert decoder.feed(framed[:-5]) == []
    assert decoder.buffered == len(framed) - 5
    assert len(decoder.feed(framed[-5:])) == 1


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00rest", "frame length 0"),
        (struct.pack(">H", 9000) + b"x" * 10, "frame of 9000 bytes exceeds 4096"),
    ],
)
def test_frame_decoder_rejects_impossible_lengths_and_stays_broken(
    data: bytes, message: str
) -> None:
    decoder = iso.FrameDecoder()
    with pytest.raises(iso.Iso8583Error, match=message):
        decoder.feed(data)
    with pytest.raises(iso.Iso8583Error, match="already broken"):
        decoder.feed(iso.encode(sale()))


def test_frame_refuses_empty_and_oversize_bodies() -> None:
    with pytest.raises(iso.Iso8583Error, match="frame length 0"):
        iso.frame(b"")
    with pytest.raises(iso.Iso8583Error, match="exceeds 4096"):
        iso.frame(b"x" * 5000)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"4": "12345"}, "field 4: Field data is 5 bytes, expecting 12"),
        ({"4": "ABCDEFGHIJKL"}, "field 4: must be digits"),
        ({"11": "12345a"}, "field 11: must be digits"),
        ({"41": "TID"}, "field 41: Field data is 3 bytes, expecting 8"),
        ({"t": "02x0"}, "field t: MTI must be 4 digits"),
        ({"97": "X0000000000000001"}, "field 97"),
        ({"2": "4761730000000000000000"}, "field 2: Field data is 22 bytes"),
    ],
)
def test_encode_names_the_bad_field(change: dict[str, str], message: str) -> None:
    with pytest.raises(iso.Iso8583Error, match=message):
        iso.encode({**sale(), **change})


def test_a_bad_pan_never_appears_in_the_error() -> None:
    bad = "4761731234567890ABC"
    with pytest.raises(iso.Iso8583Error) as info:
        iso.encode({**sale(), "2": bad})
    assert bad not in str(info.value) and "476173*********0ABC" in str(info.value)
    with pytest.raises(iso.Iso8583Error) as info:
        iso.sale_request("47617312345678901234", "3012", 1, 978, 1, TID, MID, WHEN)
    assert "47617312345678901234" not in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"amount": 10**12}, "field 4"),
        ({"amount": -1}, "field 4"),
        ({"stan": 1_000_000}, "field 11"),
        ({"tid": "1234567"}, "field 41"),
        ({"mid": "SHORT"}, "field 42"),
        ({"currency": 1000}, "field 49"),
        ({"expiry_yymm": "30-12"}, "field 14"),
    ],
)
def test_sale_request_validates_its_arguments(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {
        "pan": PAN,
        "expiry_yymm": "3012",
        "amount": 1,
        "currency": 978,
        "stan": 1,
        "tid": TID,
        "mid": MID,
        "when": WHEN,
    }
    args.update(kwargs)
    with pytest.raises(iso.Iso8583Error, match=message):
        iso.sale_request(**args)  # type: ignore[arg-type]


def test_decode_names_the_problem_in_malformed_bodies() -> None:
    body = iso.encode(sale())[2:]
    with pytest.raises(iso.Iso8583Error, match=r"field 49: .*expecting 3"):
        iso.decode(body[:-2])  # truncated
    with pytest.raises(iso.Iso8583Error, match="Extra data"):
        iso.decode(body + b"00")
    with pytest.raises(iso.Iso8583Error, match="empty message"):
        iso.decode(b"")
    with pytest.raises(iso.Iso8583Error, match="field"):
        iso.decode(b"\xff\xfe garbage that is no message")
    non_numeric = body.replace(b"000000001234", b"00000000ABCD")
    with pytest.raises(iso.Iso8583Error, match="field 4: must be digits"):
        iso.decode(non_numeric)


@settings(max_examples=150, deadline=None)
@given(
    amounts=st.lists(st.integers(min_value=0, max_value=10**12 - 1), min_size=1, max_size=6),
    stan=st.integers(min_value=0, max_value=999_999),
    digits=st.text(alphabet="0123456789", min_size=5, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=12),
)
def test_random_sales_round_trip_under_random_chunking(
    amounts: list[int], stan: int, digits: str, cuts: list[int]
) -> None:
    pan = with_luhn("476173" + digits)
    assert luhn_ok(pan)
    messages = [
        iso.sale_request(pan, "2912", amount, 978, (stan + n) % 1_000_000, TID, MID, WHEN)
        for n, amount in enumerate(amounts)
    ]
    stream = b"".join(iso.encode(m) for m in messages)
    points = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    decoder = iso.FrameDecoder()
    bodies: list[bytes] = []
    for start, end in itertools.pairwise(points):
        bodies += decoder.feed(stream[start:end])
    decoded = [iso.decode(b) for b in bodies]
    assert decoded == messages
    assert [iso.amount_of(m) for m in decoded] == amounts
    assert decoder.buffered == 0
