"""Catalog search at the edge: version-locked index bundles, filters, and ``/v1/search``."""
