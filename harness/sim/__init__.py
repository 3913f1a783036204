"""The simulated bench: every device is its own OS process speaking its real protocol on loopback.

Nothing here imports `harness.drivers` or `harness.bench`: a simulator must not know the harness
that tests it.
"""
