"""Registry verbs (login, push, pull, ls, show, promote, rollback, history, resolve)."""
