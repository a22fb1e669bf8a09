"""What can go wrong in a download, each naming the file, symbol or argument at fault."""

from __future__ import annotations


class DownloadError(RuntimeError):
    """A download could not complete (network, a refused file); nothing was written."""


class ChecksumError(DownloadError):
    """A zip's sha256 differs from its `.CHECKSUM`: refused, neither cached nor converted."""


class UnknownSymbolError(DownloadError):
    """Neither the archive nor the REST base knows the symbol (for the range asked)."""


class EndpointMissing(DownloadError):
    """The REST base does not serve this endpoint (the paper exchange serves klines only)."""
