"""The core's error types. Each carries a human-readable reason."""


class AmikoError(ValueError):
    """Base of every error the core raises on bad input or bad state."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason

    def __str__(self):
        return self.reason


class DecodeError(AmikoError):
    """Bytes from outside (CBOR, a frame, a message) are not acceptable."""


class URLError(AmikoError):
    """An amikopay:// or amikolink:// URL is malformed."""


class ProtocolError(AmikoError):
    """An event does not fit the state of a protocol state machine."""


class EncodeError(AmikoError):
    """A value cannot be encoded (unsupported type, out of range, too large)."""
