"""Fault injection for tests and drills: what goes wrong between the manager and its peers."""
