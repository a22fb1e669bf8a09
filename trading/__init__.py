"""Pure trading domain: types, settings and policy functions. No I/O lives here."""
