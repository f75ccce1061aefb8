#!/usr/bin/env bash
# moved to tools/gpu/gpu_sitting.sh; this name keeps working
exec bash "$(dirname "$0")/../tools/gpu/gpu_sitting.sh" "$@"
