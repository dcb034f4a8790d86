"""History: every point a server holds, in an embedded SQLite database (see docs/history.md)."""

from .bulk import fill
from .points import Digest, Row, bucket_of, identity_hash, row_of
from .store import History

__all__ = ["Digest", "History", "Row", "bucket_of", "fill", "identity_hash", "row_of"]
