#!/bin/sh
# Container entry point: all logic is in kmesh-start (probe, build, hand-off).
exec kmesh-start "$@"
