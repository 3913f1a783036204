"""Pure codecs (no I/O) shared by the simulators and the drivers."""
