"""A client's history in and out of the gateway, with no I/O: streaming GPX and GeoJSON
exports of shown points or of the points read from the herd (:mod:`.lines`, :mod:`.export`,
:mod:`.export_geojson`), GPX and GeoJSON uploads read into points, all or
nothing (:mod:`.imports`), and simplified trails for the map (:mod:`.trails`).

The formats, the extension namespace and the limits are in docs/history-formats.md.
"""

from __future__ import annotations

from .export import (
    CHUNK_BYTES,
    GPX_NAMESPACE,
    GPXTPX_NAMESPACE,
    HERD_NAMESPACE,
    ExportStats,
    GpxWriter,
    gpx_chunks,
    iso_time,
)
from .export_geojson import GeoJsonWriter, geojson_chunks
from .imports import (
    MAX_IMPORT_POINTS,
    ImportedPoint,
    ImportRefused,
    ImportResult,
    parse_geojson,
    parse_gpx,
    parse_import,
)
from .trails import (
    CHUNK_POINTS,
    Simplifier,
    metres_per_pixel,
    simplify,
)

__all__ = [
    "CHUNK_BYTES",
    "CHUNK_POINTS",
    "GPXTPX_NAMESPACE",
    "GPX_NAMESPACE",
    "HERD_NAMESPACE",
    "MAX_IMPORT_POINTS",
    "ExportStats",
    "GeoJsonWriter",
    "GpxWriter",
    "ImportRefused",
    "ImportResult",
    "ImportedPoint",
    "Simplifier",
    "geojson_chunks",
    "gpx_chunks",
    "iso_time",
    "metres_per_pixel",
    "parse_geojson",
    "parse_gpx",
    "parse_import",
    "simplify",
]
