"""Channel metadata as a TUF repository; what edge nodes follow (rollback, freeze and
mix-and-match protection, key rotation through root)."""
