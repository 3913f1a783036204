"""Evidence for people: the `hil run` summary table and the receipt images in the report.

Pure rendering, no bench access: `summary` turns pytest outcomes plus the plugin's verdicts into
the scenario x invariant table; `receipt_image` draws a decoded receipt as a PNG for an Allure
attachment. Importing this package is cheap (Pillow is loaded only by `receipt_image`).
"""

from __future__ import annotations
