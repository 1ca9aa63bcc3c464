#!/usr/bin/env bash
# One image, for skaffold's custom builder (skaffold.yaml): the target TARGET of the
# root Dockerfile, tagged $IMAGE (set by skaffold) and pushed when $PUSH_IMAGE is true.
# Every target shares the Dockerfile's builder stage, so the workspace compiles once
# for all of them (BuildKit reuses the stage).
#
#   scripts/image.sh TARGET [PROFILE]     PROFILE: dev (skaffold dev) or release
set -euo pipefail
target="${1:?usage: scripts/image.sh TARGET [PROFILE]}"
profile="${2:-release}"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${IMAGE:?IMAGE is set by skaffold: the image name and tag to build}"
DOCKER_BUILDKIT=1 docker build --target "$target" --build-arg "PROFILE=$profile" -t "$IMAGE" .
if [ "${PUSH_IMAGE:-false}" = true ]; then
  docker push "$IMAGE"
fi
