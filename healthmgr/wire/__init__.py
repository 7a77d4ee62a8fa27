"""The heartbeat wire protocol: pure code shared by the agent and the manager.

Nothing in this package performs I/O or imports the manager's database layer.
"""
