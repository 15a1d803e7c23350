"""Enrolled build workers: identities with their own signing keys, allowed targets, capabilities."""
