"""Drivers: the harness side of every device, each a small protocol with sim and real backends."""
