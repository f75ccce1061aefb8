#!/usr/bin/env bash
# moved to tools/gpu/grid_gpu.sh; this name keeps working
exec bash "$(dirname "$0")/../tools/gpu/grid_gpu.sh" "$@"
