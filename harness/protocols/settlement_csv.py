"""The settlement CSV: the acquirer's export of its ledger, one row per financial transaction.

The simulated host writes it and the harness reads it (a real acquirer's report is mapped to the
same columns), so the column list lives here, once.
"""

CSV_HEADER = (
    "tid",
    "stan",
    "batch",
    "amount",
    "currency",
    "card",
    "rrn",
    "auth_code",
    "response_code",
    "status",
    "received_at",
    "reversed_at",
)
