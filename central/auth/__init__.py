"""Bearer tokens with scopes: issue, authenticate, guard the routes."""
