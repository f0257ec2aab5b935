"""Coherency observed through a mount: how soon each side sees the other's changes, per cache mode."""
