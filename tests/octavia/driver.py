"""Octavia's own health manager code on a database: run with .venv-octavia's python.

Reads one JSON object on stdin::

    {"db": URL, "key": heartbeat_key, "rounds": [[message, ...], ...]}

and, round after round, message after message, does what Octavia 19.0.0's
health manager does with a heartbeat: builds the datagram with the agent's
``status_message.wrap_envelope``, unwraps it as the receiver does
(``unwrap_envelope``, ``recv_time``), then runs ``UpdateHealthDb.update_health``
and ``update_stats`` (the ``stats_db`` driver) in this process, one after the
other (Octavia runs them in two process pools). Prints
``{"datagrams": [[hex, ...], ...]}``: the same datagrams, for healthmgr.

Nothing of healthmgr is imported here: this runs in Octavia's environment.
"""

import json
import sys
import time

from octavia.amphorae.backends.health_daemon import status_message
from octavia.amphorae.drivers.health import heartbeat_udp
from octavia.common import config as octavia_config
from oslo_config import cfg


def main() -> None:
    job = json.load(sys.stdin)
    octavia_config.init([], default_config_files=[])
    conf = cfg.CONF
    conf.set_override("connection", job["db"], group="database")
    conf.set_override("heartbeat_key", job["key"], group="health_manager")
    # Processed at once, never "too slowly" (that check would skip the update).
    conf.set_override("heartbeat_interval", 3600, group="health_manager")
    # An amphora without a load balancer is deleted through the compute
    # driver: the no-op one here (there is no Nova).
    conf.set_override("compute_driver", "compute_noop_driver", group="controller_worker")
    updater = heartbeat_udp.UpdateHealthDb()
    out = []
    for messages in job["rounds"]:
        datagrams = []
        for message in messages:
            datagram = status_message.wrap_envelope(message, job["key"])
            obj = status_message.unwrap_envelope(datagram, job["key"])
            obj["recv_time"] = time.time()
            updater.update_health(obj, "127.0.0.1")
            heartbeat_udp.update_stats(obj)
            datagrams.append(datagram.hex())
        out.append(datagrams)
    json.dump({"datagrams": out}, sys.stdout)


if __name__ == "__main__":
    main()
