"""Content-addressed blob store: immutable blobs named by their hash, and per-file manifests.

Knows nothing of HTTP, authentication or images (an import-linter contract enforces it).
"""
