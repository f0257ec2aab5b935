"""Fuzzing: hypothesis strategies for FUSE messages, fuzz machines, campaigns, replay."""
