"""Direction models behind one small interface, so the ensemble does not care which is which."""
