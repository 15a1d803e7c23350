"""Models, versions and bundles; resolve (which bundle a node should run)."""
