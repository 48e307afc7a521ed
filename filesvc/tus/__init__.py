"""tus 1.0.0 resumable uploads over the files store (the protocol layer: headers, handlers, CORS).

Storage goes through :mod:`filesvc.tus.store`, the one seam to the service's tables and blobs.
"""
