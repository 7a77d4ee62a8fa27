"""The amphora agent: polls HAProxy, sends signed heartbeats.

It imports the shared wire codec (healthmgr.wire) and nothing else of the manager.
"""
