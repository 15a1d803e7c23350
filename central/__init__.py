"""Shipyard central: the artifact registry, build jobs and fleet status (a litestar service)."""
