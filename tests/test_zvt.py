"""The ZVT codec: APDUs, BMPs, serial framing and every message, from known bytes and at random."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.protocols import zvt
from harness.protocols.zvt import (
    ACK_APDU,
    BMPS,
    Abort,
    AbortRequest,
    Ack,
    Apdu,
    ApduDecoder,
    Authorization,
    BadFrame,
    Completion,
    EndOfDay,
    Frame,
    IntermediateStatus,
    LinkAck,
    LinkNak,
    Nack,
    PrintLine,
    Registration,
    RepeatReceipt,
    ReversalRequest,
    SerialFrameDecoder,
    StatusEnquiry,
    StatusInfo,
    TextBlock,
    TotalsGroup,
    ZvtError,
    bcd_decode,
    bcd_encode,
    crc16_xmodem,
    decode_apdu,
    decode_bmps,
    encode_bmps,
    frame,
    parse_ecr_message,
    parse_pt_message,
)

# -- primitives -------------------------------------------------------------------------------


def test_crc16_xmodem_known_answer() -> None:
    assert crc16_xmodem(b"123456789") == 0x31C3


def test_bcd_round_trip_and_padding() -> None:
    assert bcd_encode(1000, 6) == bytes.fromhex("000000001000")
    assert bcd_encode("0978", 2) == b"\x09\x78"
    assert bcd_decode(bytes.fromhex("000000001000")) == 1000
    assert zvt.encode_password("000000") == b"\x00\x00\x00"
    assert zvt.encode_password("123456") == b"\x12\x34\x56"


def test_bcd_rejects_overflow_negative_and_bad_nibbles() -> None:
    with pytest.raises(ZvtError, match="does not fit"):
        bcd_encode(1_000_000, 3)
    with pytest.raises(ZvtError, match="negative"):
        bcd_encode(-1, 3)
    with pytest.raises(ZvtError, match="offset 1") as info:
        bcd_decode(b"\x12\x3a")
    assert info.value.offset == 1


def test_llvar_and_lllvar_prefixes() -> None:
    assert encode_bmps([(0x8B, "VISA DEBIT")]) == b"\x8b\xf1\xf0VISA DEBIT"
    text = "x" * 305
    encoded = encode_bmps([(0x3C, text)])
    assert encoded[:4] == b"\x3c\xf3\xf0\xf5"
    assert decode_bmps(encoded) == {0x3C: text}


def test_llvar_length_byte_must_be_f0_to_f9() -> None:
    with pytest.raises(ZvtError, match="offset 2") as info:
        decode_bmps(b"\x8b\xf1\x30abc")
    assert info.value.offset == 2


@pytest.mark.parametrize(
    ("size", "prefix"),
    [(0x7F, b"\x7f"), (0x80, b"\x81\x80"), (0xFF, b"\x81\xff"), (0x100, b"\x82\x01\x00")],
)
def test_tlv_container_length_forms(size: int, prefix: bytes) -> None:
    content = bytes(range(256)) * 2
    encoded = encode_bmps([(0x06, content[:size])])
    assert encoded[1 : 1 + len(prefix)] == prefix
    assert decode_bmps(encoded) == {0x06: content[:size]}


def test_tlv_items_with_two_byte_tags() -> None:
    items = [(0x1F07, b"\x02"), (0x25, zvt.tlv_encode([(0x07, b"line")]))]
    assert zvt.tlv_decode(zvt.tlv_encode(items)) == items


def test_tlv_length_beyond_data_names_offset() -> None:
    with pytest.raises(ZvtError, match="offset 0"):
        zvt.tlv_decode(b"\x07\x05ab")


def test_masked_pan_packs_e_nibbles_and_f_padding() -> None:
    assert zvt.encode_pan("476173******0010") == bytes.fromhex("476173eeeeee0010")
    assert zvt.encode_pan("4761731****0010") == bytes.fromhex("4761731eeee0010f")
    assert zvt.decode_pan(bytes.fromhex("4761731eeee0010f")) == "4761731****0010"


def test_full_pan_never_leaves_the_codec_unmasked() -> None:
    data = encode_bmps([(0x22, "4761731234560010")])
    assert decode_bmps(data) == {0x22: "476173******0010"}


def test_redact_pan_masks_a_full_card_number_in_raw_bytes() -> None:
    raw = StatusInfo(result_code=0, card_masked="4761731234560010").to_apdu().encode()
    shown = zvt.redact_pan(raw)
    assert "4761731234560010" not in shown.hex()
    assert "476173eeeeee0010" in shown.hex()
    already = StatusInfo(card_masked="476173******0010").to_apdu().encode()
    assert zvt.redact_pan(already) == already


# -- BMP errors -------------------------------------------------------------------------------


def test_unknown_bmp_tag_names_its_offset() -> None:
    data = encode_bmps([(0x04, 1000)]) + b"\x99\x00"
    with pytest.raises(ZvtError, match=r"unknown BMP tag 0x99 at offset 7") as info:
        decode_bmps(data)
    assert info.value.offset == 7


def test_truncated_and_repeated_bmps_are_errors() -> None:
    with pytest.raises(ZvtError, match="needs 6 bytes, 3 left"):
        decode_bmps(b"\x04\x00\x00\x10")
    with pytest.raises(ZvtError, match="repeated at offset 2"):
        decode_bmps(b"\x27\x00\x27\x05")


def test_status_information_error_offset_counts_from_apdu_data() -> None:
    apdu = Apdu(0x06, 0x30, zvt.encode_password("000000") + b"\x87\x00\x01\xee")
    with pytest.raises(ZvtError, match="offset 6"):
        parse_ecr_message(apdu)


def test_wrong_value_types_are_refused_when_encoding() -> None:
    with pytest.raises(ZvtError):
        encode_bmps([(0x27, 300)])
    with pytest.raises(ZvtError):
        encode_bmps([(0x3B, b"short")])
    with pytest.raises(ZvtError, match="unknown BMP"):
        encode_bmps([(0x99, 1)])


# -- APDUs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "header"),
    [
        (0, b"\x04\x0f\x00"),
        (254, b"\x04\x0f\xfe"),
        (255, b"\x04\x0f\xff\xff\x00"),
        (300, b"\x04\x0f\xff\x2c\x01"),
    ],
)
def test_apdu_length_short_and_ff_extended(size: int, header: bytes) -> None:
    apdu = Apdu(0x04, 0x0F, bytes(size))
    raw = apdu.encode()
    assert raw[: len(header)] == header
    assert decode_apdu(raw) == apdu


def test_extended_length_is_accepted_for_short_data() -> None:
    assert decode_apdu(b"\x06\x1e\xff\x01\x00\x6c") == Abort(0x6C).to_apdu()


@pytest.mark.parametrize(
    ("raw", "offset"),
    [
        (b"\x80\x00", 2),
        (b"\x04\x0f\xff\x01", 4),
        (b"\x04\x0f\x05\x00", 4),
        (b"\x80\x00\x00\x99", 3),
    ],
)
def test_malformed_apdus_name_the_offset(raw: bytes, offset: int) -> None:
    with pytest.raises(ZvtError, match="offset") as info:
        decode_apdu(raw)
    assert info.value.offset == offset


def test_apdu_decoder_keeps_incomplete_tail() -> None:
    decoder = ApduDecoder()
    stream = ACK_APDU.encode() + IntermediateStatus(0x0A).to_apdu().encode()
    assert decoder.feed(stream[:4]) == [ACK_APDU]
    assert decoder.pending == stream[3:4]
    assert decoder.feed(stream[4:]) == [IntermediateStatus(0x0A).to_apdu()]
    assert decoder.pending == b""


# -- known bytes --------------------------------------------------------------------------------


def test_known_bytes_of_the_conversation() -> None:
    assert Registration().to_apdu().encode() == bytes.fromhex("06 00 06 000000 08 0978")
    assert Authorization(1000, 978, "A1").to_apdu().encode() == bytes.fromhex(
        "06 01 10 04 000000001000 49 0978 3c f0f0f2 4131"
    )
    assert ReversalRequest("000000", 7).to_apdu().encode() == bytes.fromhex(
        "06 30 06 000000 87 0007"
    )
    assert StatusEnquiry().to_apdu().encode() == bytes.fromhex("05 01 03 000000")
    assert RepeatReceipt(trace=12).to_apdu().encode() == bytes.fromhex("06 20 07 000000 0b 000012")
    assert EndOfDay().to_apdu().encode() == bytes.fromhex("06 50 03 000000")
    assert AbortRequest().to_apdu().encode() == bytes.fromhex("06 b0 00")
    assert ACK_APDU.encode() == bytes.fromhex("80 00 00")
    assert Nack(0x83).to_apdu().encode() == bytes.fromhex("84 83 00")
    assert IntermediateStatus(0x0A).to_apdu().encode() == bytes.fromhex("04 ff 01 0a")
    assert Abort(0x6C).to_apdu().encode() == bytes.fromhex("06 1e 01 6c")
    assert Completion(tid="29110001").to_apdu().encode() == bytes.fromhex("06 0f 05 29 29110001")


ECR_MESSAGES = [
    Registration(),
    Registration("123456", 0x0E, 756, service_byte=0x01),
    Authorization(1),
    Authorization(999_999_999_999, 978, "order-中文-42", payment_type=0x40),
    ReversalRequest("111111", 42),
    StatusEnquiry(),
    StatusEnquiry("000000", 0x02),
    RepeatReceipt(),
    RepeatReceipt("000000", 123456),
    EndOfDay("999999"),
    AbortRequest(),
    Ack(),
    Nack(0x83),
]

PT_MESSAGES = [
    Ack(),
    Nack(0x9C),
    IntermediateStatus(zvt.STATUS_WAITING_FOR_HOST),
    StatusInfo(
        result_code=0,
        amount=1234,
        currency=978,
        trace=17,
        receipt_no=5,
        time="235959",
        date="1124",
        card_masked="476173******0010",
        tid="29110001",
        order_ref="ORD-17",
        turnover_no=9,
        card_type=0x0A,
        card_name="VISA",
        expiry="3012",
        original_trace=16,
    ),
    StatusInfo(result_code=0x33),
    StatusInfo(
        result_code=0,
        amount=3000,
        currency=978,
        trace=20,
        totals=(TotalsGroup(0x00, 3, 3000), TotalsGroup(0x0A, 1, 1000)),
    ),
    StatusInfo(result_code=0, extra={0x3B: bytes(8), 0x2A: "POSHILMERCHANT1"}),
    PrintLine("  APPROVED  ", 0x20),
    PrintLine("交易成功"),
    TextBlock(("COPY", "AMOUNT EUR 12.34", "交易成功"), zvt.RECEIPT_MERCHANT),
    TextBlock(tuple(f"line {n}" for n in range(60))),
    Completion(),
    Completion(0x00, "29110001", 978),
    Abort(0x6C),
    Abort(0xA1, "host does not respond"),
]


@pytest.mark.parametrize("message", ECR_MESSAGES, ids=repr)
def test_ecr_message_round_trips_through_bytes(message: zvt.EcrMessage) -> None:
    raw = message.to_apdu().encode()
    assert parse_ecr_message(decode_apdu(raw)) == message


@pytest.mark.parametrize("message", PT_MESSAGES, ids=repr)
def test_pt_message_round_trips_through_bytes(message: zvt.PtMessage) -> None:
    raw = message.to_apdu().encode()
    parsed = parse_pt_message(decode_apdu(raw))
    assert parsed == message
    if isinstance(message, StatusInfo):
        assert isinstance(parsed, StatusInfo)
        assert parsed.extra == message.extra


def test_end_of_day_totals_prefer_the_all_cards_group() -> None:
    info = StatusInfo(totals=(TotalsGroup(0x00, 3, 3000), TotalsGroup(0x0A, 1, 1000)))
    assert (info.totals_count, info.totals_amount) == (3, 3000)
    per_type = StatusInfo(totals=(TotalsGroup(0x0A, 1, 1000), TotalsGroup(0x0B, 2, 500)))
    assert (per_type.totals_count, per_type.totals_amount) == (3, 1500)


def test_end_of_day_counts_alone_become_one_all_cards_group() -> None:
    info = StatusInfo(result_code=0, totals_count=3, totals_amount=3510)
    assert info.totals == (TotalsGroup(zvt.CARD_TYPE_ALL, 3, 3510),)
    assert parse_pt_message(zvt.status_information(info)) == info


def test_when_fills_time_and_date() -> None:
    info = StatusInfo(result_code=0, when="2026-11-24 10:11:12")
    assert (info.time, info.date) == ("101112", "1124")
    assert parse_pt_message(info.to_apdu()) == info
    with pytest.raises(ZvtError, match="date and time"):
        StatusInfo(when="yesterday")


def test_function_builders_match_the_message_classes() -> None:
    assert zvt.registration() == Registration().to_apdu()
    assert zvt.authorization(100, 978, "A") == Authorization(100, 978, "A").to_apdu()
    assert zvt.reversal("000000", 7) == ReversalRequest("000000", 7).to_apdu()
    assert zvt.status_enquiry() == StatusEnquiry().to_apdu()
    assert zvt.repeat_receipt(trace=3) == RepeatReceipt("000000", 3).to_apdu()
    assert zvt.end_of_day() == EndOfDay().to_apdu()
    assert zvt.abort_request() == AbortRequest().to_apdu()
    assert zvt.ack() == ACK_APDU
    assert zvt.nack() == Nack(0x83).to_apdu()
    assert zvt.intermediate_status(0x0A) == IntermediateStatus(0x0A).to_apdu()
    assert zvt.completion(tid="29110001") == Completion(None, "29110001").to_apdu()
    assert zvt.abort(0x6C) == Abort(0x6C).to_apdu()
    assert zvt.print_line("x") == PrintLine("x").to_apdu()
    assert zvt.print_text_block(["a", "b"]) == TextBlock(("a", "b")).to_apdu()
    info = StatusInfo(result_code=0, trace=1)
    assert zvt.status_information(info) == info.to_apdu()


def test_unknown_commands_are_errors_on_both_sides() -> None:
    with pytest.raises(ZvtError, match="unknown ECR command 06 31"):
        parse_ecr_message(Apdu(0x06, 0x31, b""))
    with pytest.raises(ZvtError, match="unexpected 06 01"):
        parse_pt_message(Authorization(100).to_apdu())


def test_commands_missing_required_parts_are_errors() -> None:
    with pytest.raises(ZvtError, match="lacks BMP 0x04"):
        parse_ecr_message(Apdu(0x06, 0x01, encode_bmps([(0x49, 978)])))
    with pytest.raises(ZvtError, match="cut short at offset 2"):
        parse_ecr_message(Apdu(0x06, 0x50, b"\x00\x00"))
    with pytest.raises(ZvtError, match="without its result code"):
        parse_pt_message(Apdu(0x06, 0x1E, b""))
    with pytest.raises(ZvtError, match="does not take BMP 0x04"):
        parse_ecr_message(Apdu(0x06, 0x20, b"\x00\x00\x00" + encode_bmps([(0x04, 1)])))


# -- result codes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("iso", "code"), [("00", 0x00), ("05", 0x05), ("51", 0x33), ("91", 0x5B), ("96", 0x60)]
)
def test_iso_response_codes_map_to_their_decimal_value(iso: str, code: int) -> None:
    assert zvt.iso_to_result(iso) == code
    assert zvt.result_to_iso(code) == iso


def test_result_texts() -> None:
    assert zvt.result_text(0x33) == "declined by host: ISO 51 (insufficient funds)"
    assert zvt.result_text(0x6C).startswith("aborted")
    assert zvt.result_text(0xB4) == "already reversed"
    assert zvt.result_text(0xEE) == "unknown result code 0xEE"
    with pytest.raises(ZvtError):
        zvt.iso_to_result("A0")


# -- serial framing ---------------------------------------------------------------------------


def test_frame_doubles_dle_and_crcs_the_unstuffed_bytes() -> None:
    apdu = Authorization(1010).to_apdu().encode()  # the amount holds a 0x10 byte
    assert b"\x10" in apdu
    framed = frame(apdu)
    assert framed.startswith(b"\x10\x02") and framed[-4:-2] == b"\x10\x03"
    assert framed[2:-4] == apdu.replace(b"\x10", b"\x10\x10")
    crc = crc16_xmodem(apdu + b"\x03")
    assert framed[-2:] == bytes([crc & 0xFF, crc >> 8])
    assert SerialFrameDecoder().feed(framed) == [Frame(apdu, framed)]


def test_bad_crc_is_a_bad_frame_and_the_next_frame_still_decodes() -> None:
    good = frame(ACK_APDU.encode())
    bad = good[:-1] + bytes([good[-1] ^ 0xFF])
    events = SerialFrameDecoder().feed(bad + good)
    assert isinstance(events[0], BadFrame) and events[0].in_frame
    assert "CRC mismatch" in events[0].reason
    assert events[1] == Frame(ACK_APDU.encode(), good)


def test_noise_link_bytes_and_broken_frames_resync_on_dle_stx() -> None:
    good = frame(Abort(0x6C).to_apdu().encode())
    decoder = SerialFrameDecoder()
    events = decoder.feed(b"\xde\xad\x06" + b"\x10\x02\x06\x1e\x10\x41" + b"\x15" + good)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["BadFrame", "LinkAck", "BadFrame", "LinkNak", "Frame"]
    assert not events[0].in_frame  # type: ignore[union-attr]
    assert "DLE followed by 0x41" in events[2].reason  # type: ignore[union-attr]
    restarted = decoder.feed(b"\x10\x02\x01\x02" + good)
    assert "restarted" in restarted[0].reason  # type: ignore[union-attr]
    assert restarted[1] == Frame(Abort(0x6C).to_apdu().encode(), good)


def test_every_fed_byte_is_in_an_event_or_pending() -> None:
    stream = b"xy" + frame(b"\x10\x10\x03") + b"\x06" + frame(b"abc")[:5]
    decoder = SerialFrameDecoder()
    events = decoder.feed(stream)
    assert b"".join(e.raw for e in events) + decoder.pending == stream
    assert decoder.reset() == frame(b"abc")[:5]


# -- properties -------------------------------------------------------------------------------


def _value_strategy(bmp: zvt.Bmp) -> st.SearchStrategy[zvt.BmpValue]:
    kind = bmp.kind.value
    if kind == "binary":
        if bmp.length == 1:
            return st.integers(0, 255)
        return st.binary(min_size=bmp.length, max_size=bmp.length)
    if kind == "number":
        return st.integers(0, 10 ** (2 * bmp.length) - 1)
    if kind == "digits":
        return st.text("0123456789", min_size=2 * bmp.length, max_size=2 * bmp.length)
    if kind == "ascii":
        return st.text(
            st.characters(min_codepoint=0x21, max_codepoint=0x7E),
            min_size=bmp.length,
            max_size=bmp.length,
        )
    if kind == "pan":
        return st.builds(
            lambda head, stars, tail: head + "*" * stars + tail,
            st.text("0123456789", min_size=6, max_size=6),
            st.integers(2, 9),
            st.text("0123456789", min_size=4, max_size=4),
        )
    if kind == "llvar text":
        return st.text(max_size=24)
    if kind == "lllvar text":
        return st.text(max_size=200)
    return st.binary(max_size=400)


bmp_sets = st.lists(st.sampled_from(sorted(BMPS)), unique=True).flatmap(
    lambda tags: st.tuples(*(st.tuples(st.just(t), _value_strategy(BMPS[t])) for t in tags))
)


@settings(max_examples=200, deadline=None)
@given(bmp_sets)
def test_random_bmp_sets_round_trip(items: tuple[tuple[int, zvt.BmpValue], ...]) -> None:
    apdu = Apdu(0x04, 0x0F, encode_bmps(items))
    decoded = decode_bmps(decode_apdu(apdu.encode()).data)
    assert decoded == dict(items)


@settings(max_examples=200, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=5),
    link_bytes=st.lists(st.sampled_from([b"", b"\x06", b"\x15"]), min_size=5, max_size=5),
    data=st.data(),
)
def test_random_payload_framing_survives_random_chunk_splits(
    payloads: list[bytes], link_bytes: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(link + frame(p) for p, link in zip(payloads, link_bytes, strict=False))
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    decoder = SerialFrameDecoder()
    events: list[zvt.FrameEvent] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        events += decoder.feed(stream[start:end])
    assert [e.apdu for e in events if isinstance(e, Frame)] == payloads
    assert not [e for e in events if isinstance(e, BadFrame)]
    expected_links = [b for b in link_bytes[: len(payloads)] if b]
    assert [e.raw for e in events if isinstance(e, LinkAck | LinkNak)] == expected_links
    assert decoder.pending == b""
