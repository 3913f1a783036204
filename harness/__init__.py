"""pos-hil: a hardware-in-the-loop harness proving POS terminals never drop a transaction."""

__version__ = "0.1.0"
