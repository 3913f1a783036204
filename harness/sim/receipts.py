"""What the simulated terminal prints: customer receipts and the end-of-day slip, as ESC/POS.

The status line is the claim the oracle holds the terminal to: "APPROVED / 交易成功" only for an
approved, journaled transaction; "NOT PAID / 交易失败 未支付" for a declined or failed one. A
reprint carries a copy marker so it can never pass for a second original.
"""

from __future__ import annotations

from harness.protocols.escpos import ReceiptBuilder
from harness.sim.journal import Settlement, Txn

COPY_MARK = ("*** COPY / DUPLICATE ***", "*** 重打印 ***")


def _money(amount: int, currency: int) -> str:
    names = {978: "EUR", 156: "CNY", 840: "USD", 756: "CHF", 826: "GBP"}
    return f"{names.get(currency, str(currency))} {amount // 100}.{amount % 100:02d}"


def status_lines(txn: Txn, language: str) -> list[str]:
    """The receipt's verdict, in the terminal's language(s)."""
    zh = language == "zh"
    if txn.kind == "cancel":
        return ["REVERSAL - SALE CANCELLED"] + (["撤销成功"] if zh else [])
    if txn.state == "approved":
        return ["APPROVED - PAID"] + (["交易成功 已支付"] if zh else [])
    if txn.state == "declined" and txn.response_code not in (None, ""):
        return [f"DECLINED ({txn.response_code}) - NOT PAID"] + (["交易失败 未支付"] if zh else [])
    return ["TRANSACTION FAILED - NOT PAID"] + (["交易失败 未支付"] if zh else [])


def text_lines(
    txn: Txn, tid: str, mid: str, language: str, copy: bool, cancelled_sale: Txn | None = None
) -> list[str]:
    """The receipt's text, line by line: printed on paper, or sent to the ECR (06 D3)."""
    zh = language == "zh"
    lines = ["POS-HIL TEST MERCHANT"] + (["测试商户"] if zh else [])
    if copy:
        lines += list(COPY_MARK if zh else COPY_MARK[:1])
    lines.append(f"TID {tid}  MID {mid}")
    if txn.kind == "cancel":
        lines.append("REVERSAL / 撤销" if zh else "REVERSAL")
    else:
        lines.append("SALE / 消费" if zh else "SALE")
    lines += [
        f"CARD {txn.card_masked}",
        f"AMOUNT {_money(txn.amount, txn.currency)}",
        f"TRACE {txn.trace:06d}  RECEIPT {txn.receipt_no:04d}",
    ]
    if cancelled_sale is not None:
        lines.append(f"CANCELS TRACE {cancelled_sale.trace:06d}")
    if txn.rrn:
        lines.append(f"RRN {txn.rrn}  AUTH {txn.auth_code}")
    if txn.order_ref:
        lines.append(f"ORDER {txn.order_ref}")
    lines.append(f"DATE {txn.when}")
    return lines + status_lines(txn, language)


def customer_receipt(
    txn: Txn, *, tid: str, mid: str, language: str, copy: bool, cancelled_sale: Txn | None = None
) -> bytes:
    """One customer receipt, ending with a cut and a completion barrier (GS r 1)."""
    lines = text_lines(txn, tid, mid, language, copy, cancelled_sale)
    verdict = len(status_lines(txn, language))
    b = ReceiptBuilder().init().align("center").bold(True).line(lines[0]).bold(False)
    b.align("left")
    for line in lines[1:-verdict]:
        b.line(line)
    b.bold(True)
    for line in lines[-verdict:]:
        b.line(line)
    b.bold(False).feed(2).cut().barrier()
    return b.build()


def settlement_receipt(
    settlement: Settlement, *, tid: str, currency: int, language: str, when: str
) -> bytes:
    zh = language == "zh"
    b = ReceiptBuilder().init().align("center").bold(True).line("END OF DAY")
    if zh:
        b.line("结算")
    b.bold(False).align("left")
    b.line(f"TID {tid}  BATCH {settlement.batch:06d}")
    b.line(f"SALES {settlement.count}  TOTAL {_money(settlement.amount, currency)}")
    balanced = settlement.host_result == "00"
    b.line("HOST: BALANCED" if balanced else f"HOST: MISMATCH ({settlement.host_result})")
    if zh:
        b.line("对账平" if balanced else "对账不平")
    b.line(f"DATE {when}")
    b.feed(2).cut().barrier()
    return b.build()
