"""Trusted publisher keys, changed at run time (admin, audited) and shared by every replica."""
