"""Content-addressed blobs: the store, upload/download routes, blob rows."""
