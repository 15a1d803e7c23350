"""Build jobs: submit, lease to workers by hardware, finalise into a version."""
