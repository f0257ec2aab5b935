"""Conformance rules, by area; each test is one rule with a stable id."""
