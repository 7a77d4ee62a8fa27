"""Running beside OpenStack Octavia: its worker's RPC, its configuration file.

Needs the ``octavia`` extra (``pip install 'healthmgr[octavia]'``: oslo.messaging
and oslo.config); nothing else in healthmgr imports this package.
"""
