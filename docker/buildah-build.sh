#!/usr/bin/env bash
# Build docker/Dockerfile with buildah, no daemon needed (chroot isolation; run as root).
#   docker/buildah-build.sh [TAG]      TAG defaults to the image the Dockerfile names (BIDS_ENCODING_CONTAINER)
# The base image (the Dockerfile's FROM) is pulled when a registry is reachable. When it cannot be, a
# stand-in is made from Debian packages with mmdebstrap (the same Debian release and Python minor version)
# and tagged with the base's name; its tarball is kept in $BIDS_ENCODING_IMAGE_CACHE (default
# ~/.cache/bids-encoding/container), so later builds skip mmdebstrap.
# When pip is pointed at a folder of wheels (PIP_FIND_LINKS, e.g. one holding the CPU torch wheel), the
# build mounts that folder read only and installs from it instead of PyTorch's index.
# Needs: buildah, and mmdebstrap for a stand-in base (Debian: apt-get install buildah mmdebstrap uidmap).
set -euo pipefail
cd "$(dirname "$0")/.."

dockerfile=docker/Dockerfile
tag=${1:-$(sed -n 's/.*BIDS_ENCODING_CONTAINER=\([^ \\]*\).*/\1/p' "$dockerfile" | head -n1)}
base=$(sed -n 's/^FROM \([^ ]*\).*/\1/p' "$dockerfile" | head -n1)
case $base in */*) ;; *) base=docker.io/library/$base ;; esac
cache=${BIDS_ENCODING_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bids-encoding/container}

# The stand-in's recipe; its hash names the cached tarball and labels the image, so a changed recipe rebuilds.
suite=${base##*-}                                          # python:3.11.11-slim-bookworm -> bookworm
python_minor=$(echo "$base" | sed -n 's/.*:\([0-9]*\.[0-9]*\)\..*/\1/p')   # -> 3.11
mmdebstrap_args=(--variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates,passwd
                 --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*'
                 --dpkgopt='path-exclude=/usr/share/locale/*' "$suite")
containerfile="FROM scratch
ADD base.tar /
RUN ln -s /usr/bin/python3 /usr/local/bin/python && ln -s /usr/bin/pip3 /usr/local/bin/pip \
 && rm /usr/lib/python${python_minor}/EXTERNALLY-MANAGED \
 && python -c 'import sys; assert sys.version_info[:2] == (${python_minor/./, }), sys.version'
CMD [\"python3\"]"
recipe=$(printf '%s\n' "${mmdebstrap_args[@]}" "$containerfile" | sha256sum | cut -c1-16)

stand_in_label() { buildah inspect --type image --format '{{index .OCIv1.Config.Labels "org.bids-encoding.stand-in"}}' "$base" 2>/dev/null; }

make_stand_in() {
    local tarball=$cache/$suite-$recipe.tar dir
    mkdir -p "$cache"
    if [ ! -s "$tarball" ]; then
        command -v mmdebstrap >/dev/null || { echo "buildah-build: a stand-in base needs mmdebstrap (apt-get install mmdebstrap)" >&2; exit 1; }
        echo "buildah-build: making a stand-in for $base from Debian $suite packages (mmdebstrap)" >&2
        mmdebstrap --quiet "${mmdebstrap_args[@]}" "$tarball.partial.tar"
        mv "$tarball.partial.tar" "$tarball"
    fi
    dir=$(mktemp -d)
    trap 'rm -rf "$dir"' RETURN
    ln "$tarball" "$dir/base.tar" 2>/dev/null || cp "$tarball" "$dir/base.tar"
    printf '%s\n' "$containerfile" > "$dir/Containerfile"
    buildah bud --quiet --isolation chroot --label "org.bids-encoding.stand-in=$recipe" \
        -f "$dir/Containerfile" -t "$base" "$dir" >/dev/null
}

if [ -n "$(stand_in_label)" ] && [ "$(stand_in_label)" = "$recipe" ]; then
    echo "buildah-build: base $base: the stand-in made from Debian $suite packages (already built)" >&2
elif buildah inspect --type image "$base" >/dev/null 2>&1 && [ -z "$(stand_in_label)" ]; then
    echo "buildah-build: base $base: present" >&2
elif buildah pull --quiet "$base" >/dev/null 2>&1; then
    echo "buildah-build: base $base: pulled" >&2
else
    echo "buildah-build: base $base cannot be pulled: using a stand-in made from Debian $suite packages" >&2
    make_stand_in
fi

# This machine's pip settings that the build needs too: a folder of wheels, a CA bundle (TLS-intercepting proxy)
pip_setting() { python3 -m pip config get "global.$1" 2>/dev/null || true; }
links=${PIP_FIND_LINKS:-$(pip_setting find-links)}
cert=${PIP_CERT:-$(pip_setting cert)}
build_args=()
if [ -n "$links" ] && [ -d "$links" ]; then
    links=$(cd "$links" && pwd)
    build_args+=(-v "$links:$links:ro" --build-arg "PIP_FIND_LINKS=$links" --build-arg "PIP_EXTRA_INDEX_URL=")
fi
if [ -n "$cert" ] && [ -f "$cert" ]; then
    build_args+=(-v "$cert:$cert:ro" --build-arg "PIP_CERT=$cert")
fi
buildah bud --isolation chroot --network host "${build_args[@]}" -f "$dockerfile" -t "$tag" .
echo "buildah-build: built $tag" >&2
