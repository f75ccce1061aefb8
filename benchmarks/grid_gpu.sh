#!/usr/bin/env bash
# moved to tools/grid_gpu.sh; this name keeps working
exec bash "$(dirname "$0")/../tools/grid_gpu.sh" "$@"
