"""HTTP route handlers, one module per area."""
