"""Stage 3's transports (see :mod:`otel_basic.road`): OTLP over HTTP or gRPC, a file, the console."""

# Smaller bodies are sent as they are even with gzip on: a per-step batch of a few spans saves a
# few hundred bytes, and each compression sets up a new zlib stream (about 300 KB of buffers at
# level 5) in a call that also hands the GIL to the app's thread and back. The same for gRPC: its
# transport compresses per call, requests of this size or more only.
GZIP_MIN_BYTES = 8192
