"""The ESC/POS codec: receipts round-trip, chunking never changes events, status bytes are exact."""

from __future__ import annotations

import pytest
from escpos.printer import Dummy
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.protocols.escpos import (
    AutoStatusBack,
    Cut,
    EscPosDecoder,
    EscPosError,
    Event,
    Feed,
    Init,
    PrinterStatus,
    RealtimeRecovery,
    RealtimeStatus,
    ReceiptBuilder,
    TextLine,
    TransmitStatus,
    Unknown,
    asb_status_bytes,
    decode_asb,
    decode_realtime_status,
    decode_receipts,
    is_realtime_status_byte,
    paper_sensor_byte,
    realtime_status_byte,
)

CHINESE = "交易成功 已支付"

HEALTHY = PrinterStatus()
PAPER_OUT = PrinterStatus(offline=True, paper="out")
NEAR_END = PrinterStatus(paper="near_end")
CUTTER_JAM = PrinterStatus(offline=True, autocutter_error=True, error=True)
COVER_OPEN = PrinterStatus(offline=True, cover_open=True)


def decode(data: bytes, **kwargs: bool) -> list[Event]:
    return EscPosDecoder(**kwargs).feed(data)


def decode_chunked(data: bytes, cuts: list[int], **kwargs: bool) -> list[Event]:
    decoder = EscPosDecoder(**kwargs)
    events: list[Event] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        events += decoder.feed(data[start:cut])
        start = cut
    return events


def lines_and_cuts(events: list[Event]) -> list[Event]:
    return [e for e in events if isinstance(e, TextLine | Cut)]


# -- round trips ------------------------------------------------------------------------------
def test_builder_receipt_decodes_to_the_same_lines_and_cuts() -> None:
    data = (
        ReceiptBuilder()
        .init()
        .align("center")
        .bold()
        .line("ACME STORE")
        .bold(False)
        .align("left")
        .line("SALE  CNY 12.34  APPROVED 00")
        .line(CHINESE)
        .line("金额：￥12.34")
        .line()
        .feed(3)
        .cut()
        .line("second")
        .cut(partial=True)
        .barrier()
        .build()
    )
    for power_on_chinese in (True, False):  # FS & ... FS . works whatever the printer's mode
        events = decode(data, strict=True, chinese_mode=power_on_chinese)
        assert events == [
            Init(),
            TextLine("ACME STORE"),
            TextLine("SALE  CNY 12.34  APPROVED 00"),
            TextLine(CHINESE),
            TextLine("金额：￥12.34"),
            TextLine(""),
            Feed(3),
            Cut(partial=False),
            TextLine("second"),
            Cut(partial=True),
            TransmitStatus(1),
        ]


def test_builder_refuses_control_characters_in_a_line() -> None:
    with pytest.raises(ValueError, match="control"):
        ReceiptBuilder().line("two\nlines")


def test_python_escpos_dummy_output_decodes_to_its_text() -> None:
    printer = Dummy(profile="default")
    printer.hw("INIT")
    printer.set(align="center", bold=True, double_height=True, double_width=True)
    printer.textln("ACME STORE")
    printer.set(align="left", bold=False, underline=1, font="b", invert=True, flip=True)
    printer.textln("SALE  CNY 12.34  APPROVED 00")
    printer.textln(CHINESE)
    printer.set(custom_size=True, width=2, height=2)
    printer.text("no newline yet ")
    printer.textln("then one")
    printer.barcode("4006381333931", "EAN13")
    printer.cashdraw(2)
    printer.buzzer(2, 3)
    printer.line_spacing(30, divisor=60)
    printer.line_spacing()
    printer.control("HT")
    printer.control("CR")
    printer.control("FF")
    printer.cut()
    printer.cut(mode="PART", feed=False)
    events = decode(printer.output, strict=True)  # strict: every byte python-escpos sent is known
    assert lines_and_cuts(events) == [
        TextLine("ACME STORE"),
        TextLine("SALE  CNY 12.34  APPROVED 00"),
        TextLine(CHINESE),
        TextLine("no newline yet then one"),
        Cut(partial=False),
        Cut(partial=True),
    ]
    assert events[0] == Init()
    assert Feed(6) in events  # python-escpos cut() feeds 6 lines first


def test_raster_image_data_is_skipped_exactly() -> None:
    width_bytes, height = 3, 4
    # raster bytes that look like LF, ESC @, GS V, DLE EOT and a GB18030 lead byte
    raster = bytes([0x0A, 0x1B, 0x40, 0x1D, 0x56, 0x00, 0x10, 0x04, 0x01, 0x81, 0x30, 0x0A])
    assert len(raster) == width_bytes * height
    header = b"\x1dv0\x00" + width_bytes.to_bytes(2, "little") + height.to_bytes(2, "little")
    data = b"before\n" + header + raster + b"after\n"
    assert decode(data, strict=True) == [TextLine("before"), TextLine("after")]
    for split in range(1, len(data)):
        assert decode_chunked(data, [split], strict=True) == [TextLine("before"), TextLine("after")]


def test_python_escpos_image_is_skipped_and_text_after_it_decodes() -> None:
    printer = Dummy(profile="default")
    printer.qr("https://example.test/receipt/42")  # rendered as a GS v 0 raster image
    printer.textln("after the code")
    events = decode(printer.output, strict=True)
    assert lines_and_cuts(events)[-1] == TextLine("after the code")


def test_formatting_commands_consume_exactly_their_arguments() -> None:
    # each argument byte is a printable character: a wrong length would leak it into the text
    data = (
        b"\x1ba1\x1bE1\x1b!A\x1b-1\x1bt\x00\x1bM1\x1b2\x1b3A\x1bJA\x1d!A\x1dBA\x1dLAA\x1dWAA"
        b"\x1bpAAA\x1d(k\x03\x00AAA\x1d(L\x02\x00AA\x1c&\x1c.\rtext\n"
    )
    assert decode(data, strict=True) == [TextLine("text")]


def test_realtime_and_status_commands_are_events() -> None:
    data = b"\x10\x04\x01\x10\x04\x04\x10\x05\x02\x1da\x0f\x1dr\x01"
    assert decode(data, strict=True) == [
        RealtimeStatus(1),
        RealtimeStatus(4),
        RealtimeRecovery(2),
        AutoStatusBack(0x0F),
        TransmitStatus(1),
    ]


def test_code_page_applies_outside_chinese_mode() -> None:
    data = b"\x1c.\x1bt\x10caf\xe9\n\x1bt\x00\x82\n\x1c&\xc4\xe3\xba\xc3\n"
    assert decode(data, strict=True) == [TextLine("café"), TextLine("é"), TextLine("你好")]


def test_esc_at_restores_power_on_chinese_mode_and_drops_unterminated_text() -> None:
    data = b"\x1c.lost\x1b@" + "你好".encode("gb18030") + b"\n"
    assert decode(data) == [Init(discarded="lost"), TextLine("你好")]


def test_incomplete_gb18030_tail_waits_for_the_next_chunk() -> None:
    decoder = EscPosDecoder()
    encoded = "😀中".encode("gb18030")  # a 4-byte and a 2-byte sequence
    assert decoder.feed(encoded[:3]) == []
    assert decoder.feed(encoded[3:5]) == []
    assert decoder.feed(encoded[5:] + b"\n") == [TextLine("😀中")]


def test_strict_mode_names_the_offset_and_bytes_of_an_unknown_command() -> None:
    with pytest.raises(EscPosError, match=r"offset 6: unknown command 1b 07") as info:
        decode(b"\x1b@abcd\x1b\x07rest\n", strict=True)
    assert info.value.offset == 6


def test_lenient_mode_reports_unknown_bytes_and_continues() -> None:
    assert decode(b"\x1b@ab\x1b\x07cd\n") == [Init(), Unknown(b"\x1b\x07", 4), TextLine("abcd")]


def test_decode_receipts_splits_at_cuts_and_marks_the_open_tail() -> None:
    data = (
        ReceiptBuilder().init().line("one").line(CHINESE).cut().cut().line("two").cut(True).build()
        + b"tail without cut\nunterminated"
    )
    receipts = decode_receipts(data)
    assert [(r.lines, r.complete) for r in receipts] == [
        (("one", CHINESE), True),
        (("two",), True),
        (("tail without cut", "unterminated"), False),
    ]
    assert receipts[1].partial_cut and receipts[0].text == f"one\n{CHINESE}"


# -- chunking never changes the events ----------------------------------------------------------
receipt_text = st.text(
    alphabet=st.characters(min_codepoint=0x20, exclude_categories=("Cc", "Cs")), max_size=12
)


@st.composite
def receipt_streams(draw: st.DrawFn) -> bytes:
    builder = ReceiptBuilder().init()
    for _ in range(draw(st.integers(1, 6))):
        step = draw(st.sampled_from(["line", "line", "line", "bold", "align", "feed", "cut"]))
        if step == "line":
            builder.line(draw(receipt_text))
        elif step == "bold":
            builder.bold(draw(st.booleans()))
        elif step == "align":
            builder.align(draw(st.sampled_from(["left", "center", "right"])))
        elif step == "feed":
            builder.feed(draw(st.integers(0, 255)))
        else:
            builder.cut(draw(st.booleans()))
    return builder.barrier().build()


@settings(max_examples=200, deadline=None)
@given(data=receipt_streams(), cuts=st.lists(st.integers(0, 400), max_size=8))
def test_any_chunking_of_a_receipt_gives_identical_events(data: bytes, cuts: list[int]) -> None:
    cuts = [c % (len(data) + 1) for c in cuts]
    assert decode_chunked(data, cuts, strict=True) == decode(data, strict=True)


@settings(max_examples=200, deadline=None)
@given(lines=st.lists(receipt_text, min_size=1, max_size=5))
def test_builder_lines_round_trip_through_the_decoder(lines: list[str]) -> None:
    builder = ReceiptBuilder().init()
    for line in lines:
        builder.line(line)
    receipts = decode_receipts(builder.cut().build())
    assert [r.lines for r in receipts] == [tuple(lines)]


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(max_size=200)
    | st.lists(
        st.sampled_from(
            [
                b"\x1b",
                b"\x1d",
                b"\x1c",
                b"\x10",
                b"\n",
                b"\x04",
                b"V",
                b"v0",
                b"(k",
                b"&",
                b".",
                b"\x81",
                b"\x30",
                b"\xb0",
                b"\xa1",
                b"A",
                b"\x05",
                b"\x01",
                b"\x02",
                b"\x00",
            ]
        ),
        max_size=60,
    ).map(b"".join),
    cuts=st.lists(st.integers(0, 200), max_size=10),
)
def test_any_chunking_of_arbitrary_bytes_gives_identical_events(
    data: bytes, cuts: list[int]
) -> None:
    cuts = [c % (len(data) + 1) for c in cuts]
    whole = EscPosDecoder()
    chunked = EscPosDecoder()
    expected = [*whole.feed(data), TextLine(whole.discard_text())]
    got: list[Event] = []
    start = 0
    for cut in [*sorted(cuts), len(data)]:
        got += chunked.feed(data[start:cut])
        start = cut
    got.append(TextLine(chunked.discard_text()))
    assert got == expected
    assert chunked.pending == whole.pending


# -- status bytes -------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_healthy_idle_printer_answers_0x12_for_every_n(n: int) -> None:
    assert realtime_status_byte(n, HEALTHY) == 0x12


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (CUTTER_JAM, {1: 0x1A, 2: 0x52, 3: 0x1A, 4: 0x12}),
        (PAPER_OUT, {1: 0x1A, 2: 0x32, 3: 0x12, 4: 0x72}),
        (COVER_OPEN, {1: 0x1A, 2: 0x16, 3: 0x12, 4: 0x12}),
        (NEAR_END, {1: 0x12, 2: 0x12, 3: 0x12, 4: 0x1E}),
    ],
    ids=["cutter-jam", "paper-out", "cover-open", "near-end"],
)
def test_fault_status_bytes_match_the_reference(
    status: PrinterStatus, expected: dict[int, int]
) -> None:
    assert {n: realtime_status_byte(n, status) for n in (1, 2, 3, 4)} == expected


def test_status_bytes_decode_back_to_the_status() -> None:
    for status in (HEALTHY, CUTTER_JAM, PAPER_OUT, COVER_OPEN, NEAR_END):
        rebuilt = PrinterStatus()
        for n in (1, 2, 3, 4):
            byte = realtime_status_byte(n, status)
            assert is_realtime_status_byte(byte)
            rebuilt = decode_realtime_status(n, byte).apply(rebuilt)
        assert rebuilt == status
        assert decode_asb(asb_status_bytes(status)).apply(status) == status


def test_decoder_refuses_a_byte_that_is_not_a_dle_eot_reply() -> None:
    with pytest.raises(ValueError, match="not a DLE EOT reply"):
        decode_realtime_status(1, 0x10)  # an ASB first byte


def test_asb_and_paper_sensor_bytes() -> None:
    assert asb_status_bytes(HEALTHY) == bytes([0x10, 0x00, 0x00, 0x00])
    assert asb_status_bytes(CUTTER_JAM) == bytes([0x18, 0x08, 0x00, 0x00])
    assert asb_status_bytes(PAPER_OUT) == bytes([0x18, 0x00, 0x0C, 0x00])
    assert asb_status_bytes(COVER_OPEN) == bytes([0x38, 0x00, 0x00, 0x00])
    assert [paper_sensor_byte(s) for s in (HEALTHY, NEAR_END, PAPER_OUT)] == [0x00, 0x03, 0x0C]


def test_status_summary_names_the_faults() -> None:
    assert HEALTHY.summary() == "ready"
    assert CUTTER_JAM.summary() == "offline, autocutter error"
    assert PAPER_OUT.summary() == "offline, paper out"
