#!/bin/sh
# Fetch the pinned Chart.js UMD build from the npm registry into
# streamapp/web/static/ (the dashboard and the audit explorer load it from the
# worker itself: no CDN, works offline).  Checks the tarball and the file
# against the digests recorded when it was vendored.
set -eu
VERSION=4.5.1
TARBALL_SHA256=f540d98468457ac7a0aabb32006dfb066297e096c5ea063a5d80aa973d1c337a
FILE_SHA256=48444a82d4edcb5bec0f1965faacdde18d9c17db3063d042abada2f705c9f54a
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --loglevel=error "chart.js@$VERSION" >/dev/null
echo "$TARBALL_SHA256  chart.js-$VERSION.tgz" | sha256sum -c -
tar xzf "chart.js-$VERSION.tgz"
echo "$FILE_SHA256  package/dist/chart.umd.min.js" | sha256sum -c -
cp package/dist/chart.umd.min.js "$here/streamapp/web/static/chart.umd.min.js"
cp package/LICENSE.md "$here/streamapp/web/static/chart.js.LICENSE.md"
echo "vendored Chart.js $VERSION"
