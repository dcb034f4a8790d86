#!/usr/bin/env bash
# Refresh the vendored front-end assets in this directory from the npm registry.
#
# Fetches each package with `npm pack` into a temporary directory, copies exactly the files
# the map and API docs pages need, and rewrites VERSIONS (versions, tarball integrity, sha256 of every
# vendored file). Re-running with nothing new upstream changes nothing. Needs node and npm.
# Works from any directory; only writes leaflet/, leaflet.markercluster/, topojson-client/,
# world-atlas/, swagger-ui/ and VERSIONS next to this script (README.md and this script are left alone).
set -euo pipefail

LEAFLET_RANGE="~1.9"          # 1.9.x only: 2.0 is a rewrite (ESM, no global L)
TOPOJSON_CLIENT_RANGE="^3"
WORLD_ATLAS_RANGE="^2"
MARKERCLUSTER_RANGE="^1.5"   # leaflet.markercluster: clusters of markers (peer: Leaflet ^1.3)
SWAGGER_UI_RANGE="^5"        # swagger-ui-dist: the /api/docs page (OpenAPI 3.1 from 5.0 on)

VENDOR_DIR="$(cd "$(dirname "$0")" && pwd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/vendor-refresh.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

STAGE="$WORK/stage"
mkdir -p "$STAGE"
: >"$WORK/versions"
: >"$WORK/integrity"

# fetch NAME RANGE EXPECTED_MAJOR: npm pack NAME@RANGE, extract to $WORK/NAME/package,
# record "name version" and the tarball integrity.
fetch() {
    local name=$1 range=$2 major=$3 dir="$WORK/$1" json filename version integrity
    mkdir -p "$dir"
    json=$(cd "$dir" && npm pack --json --ignore-scripts --loglevel=warn "$name@$range")
    read -r filename version integrity < <(
        node -e 'const p = JSON.parse(require("fs").readFileSync(0, "utf8"))[0];
                 console.log(p.filename, p.version, p.integrity);' <<<"$json"
    )
    case "$version" in
        "$major".*-*) echo "refusing pre-release $name@$version" >&2; exit 1 ;;
        "$major".*) ;;
        *) echo "unexpected $name@$version for range $range" >&2; exit 1 ;;
    esac
    tar -xzf "$dir/$filename" -C "$dir"
    echo "$name $version" >>"$WORK/versions"
    echo "$filename $integrity" >>"$WORK/integrity"
    echo "fetched $name@$version" >&2
}

# put PACKAGE SRC_RELATIVE_TO_PACKAGE DEST_RELATIVE_TO_STAGE
put() {
    mkdir -p "$(dirname "$STAGE/$3")"
    cp "$WORK/$1/package/$2" "$STAGE/$3"
}

fetch leaflet "$LEAFLET_RANGE" 1
put leaflet dist/leaflet.js leaflet/leaflet.js
put leaflet dist/leaflet.css leaflet/leaflet.css
for img in marker-icon.png marker-icon-2x.png marker-shadow.png layers.png layers-2x.png; do
    put leaflet "dist/images/$img" "leaflet/images/$img"
done
put leaflet LICENSE leaflet/LICENSE

fetch leaflet.markercluster "$MARKERCLUSTER_RANGE" 1
for file in leaflet.markercluster.js MarkerCluster.css MarkerCluster.Default.css; do
    put leaflet.markercluster "dist/$file" "leaflet.markercluster/$file"
done
put leaflet.markercluster MIT-LICENCE.txt leaflet.markercluster/LICENSE

fetch topojson-client "$TOPOJSON_CLIENT_RANGE" 3
put topojson-client dist/topojson-client.min.js topojson-client/topojson-client.min.js
put topojson-client LICENSE topojson-client/LICENSE

fetch world-atlas "$WORLD_ATLAS_RANGE" 2
put world-atlas countries-110m.json world-atlas/countries-110m.json
put world-atlas land-110m.json world-atlas/land-110m.json
put world-atlas LICENSE world-atlas/LICENSE
cat >"$STAGE/world-atlas/NOTICE" <<'EOF'
countries-110m.json and land-110m.json are TopoJSON derived by the world-atlas package
(https://github.com/topojson/world-atlas, ISC licence, see LICENSE) from the Natural Earth
1:110m Cultural and Physical vectors (https://www.naturalearthdata.com/).
Natural Earth data is in the public domain; no permission is needed to use it.
EOF

fetch swagger-ui-dist "$SWAGGER_UI_RANGE" 5
for file in swagger-ui-bundle.js swagger-ui-bundle.js.LICENSE.txt swagger-ui.css LICENSE NOTICE; do
    put swagger-ui-dist "$file" "swagger-ui/$file"
done

chmod -R u=rwX,go=rX "$STAGE"

# Swap the staged directories in only once every file has been fetched.
for pkg in leaflet leaflet.markercluster topojson-client world-atlas swagger-ui; do
    rm -rf "${VENDOR_DIR:?}/$pkg"
    cp -R "$STAGE/$pkg" "$VENDOR_DIR/$pkg"
done

{
    echo "# Vendored npm packages: name version (written by refresh.sh, do not edit)"
    cat "$WORK/versions"
    echo
    echo "# npm tarball integrity"
    cat "$WORK/integrity"
    echo
    echo "# sha256 of vendored files, relative to static/vendor/"
    (cd "$VENDOR_DIR" && find leaflet leaflet.markercluster topojson-client world-atlas swagger-ui -type f -print0 |
        LC_ALL=C sort -z | xargs -0 sha256sum)
} >"$WORK/VERSIONS"
cp "$WORK/VERSIONS" "$VENDOR_DIR/VERSIONS"
chmod 644 "$VENDOR_DIR/VERSIONS"

cat "$WORK/versions" >&2
