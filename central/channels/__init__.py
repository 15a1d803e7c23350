"""Channels: promote, roll back, halt and resume a rollout."""
