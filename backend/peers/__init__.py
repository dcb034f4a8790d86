"""Links to neighbouring servers: handshake (``handshake``), flooding with a bounded queue per
link, anti-entropy and heartbeats (``link``), and all of a server's links (``manager``).

Each link is one TCP connection, dialled by the server whose name sorts first and accepted
by the other; both then send AT lines over it. See ``docs/protocol.md``.
"""

from ..transport import format_address
from .handshake import Handshake, HandshakeError
from .link import PeerLink
from .manager import PeerManager

__all__ = ["Handshake", "HandshakeError", "PeerLink", "PeerManager", "format_address"]
