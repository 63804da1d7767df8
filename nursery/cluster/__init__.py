"""The local reference topology without Docker: ``nursery cluster up|down|status|restart|switchover``.

``up`` runs a supervisor that starts, as child processes it owns: PostgreSQL (a private server
in ``DIR/pg``, unless ``NURSERY_DATABASE_URL`` is set), ``redis-server`` (unless
``NURSERY_REDIS_URL`` is set; with ``--redis-cluster``, a Redis Cluster of three masters
``redis-1``..``redis-3`` in ``DIR/redis-cluster``), N ``nursery serve`` instances on ports
``base_port``.. and Caddy (``conf/Caddyfile``) in front of them on ``proxy_port`` (with
``--tls``, HTTPS from Caddy's local CA: ``_tls``). With ``--ha`` (``_ha``), no single point
of failure in the data tier: etcd and three PostgreSQL nodes under Patroni in ``DIR/ha``
(``pg-1``..``pg-3``; ``switchover`` moves the primary) and a Redis Cluster of three masters
with a replica each (docs/operations.md). The other commands talk to it through its
directory (``--dir``, else ``NURSERY_CLUSTER_DIR``, else the last ``up``'s, else
``.nursery/cluster``: ``_where``)::

    DIR/state.json      pids, ports, states, restarts, the last rolling restart (0600)
    DIR/supervisor.lock held (flock) while the supervisor runs
    DIR/secret_key      NURSERY_SECRET_KEY of every instance, unless given (0600)
    DIR/logs/NAME.log   each process's output; supervisor.log with --detach
    DIR/prometheus.yml  a Prometheus config scraping these instances (``_prometheus``)
    DIR/pg/             the private PostgreSQL's data (its log: DIR/logs/postgres.log)
    DIR/caddy/          Caddy's HOME and data: with --tls, its local CA
                        (caddy/data/caddy/pki/authorities/local/root.crt)

``restart`` is a rolling restart (SIGHUP to the supervisor): one instance at a time, each back
and routed to by Caddy before the next (see ``_supervisor``). ``down`` is SIGTERM.

Modules: ``_config`` (what to run), ``_run`` (the supervisor's process: ``up``),
``_plan`` (its children: command lines, environments, probes), ``_supervisor`` (running
them), ``_child`` (one supervised process), ``_rolling`` (the rolling
restart), ``_probes`` (is it answering), ``_state`` (the directory), ``_where`` (which
directory), ``_tls`` (HTTPS with Caddy's local CA), ``_logs`` (the children's log files and how
the supervisor words them), ``_prometheus`` (its scrape config), ``_redis_cluster`` (what makes
redis-servers a cluster; shared with the tests' fixture), ``_ha`` (``--ha``'s children, roles
and switchover), ``_patroni`` (a Patroni node's configuration and REST API), ``_etcd`` (its
etcd), ``_commands`` (the command line).

Errors::

    NurseryError
     └── ClusterError   anything the operator has to fix, with the reason: a process that
                        exits or is not ready during startup (with its log tail), a missing
                        program, a port in use, a supervisor already running on the directory
"""

from nursery.cluster._commands import add_cluster_commands as add_cluster_commands
from nursery.cluster._commands import format_status as format_status
from nursery.cluster._commands import main as main
from nursery.cluster._commands import probe_state as probe_state
from nursery.cluster._commands import run_cluster_command as run_cluster_command
from nursery.cluster._config import ClusterConfig as ClusterConfig
from nursery.cluster._config import ClusterError as ClusterError
from nursery.cluster._probes import http_get as http_get
from nursery.cluster._run import run_cluster as run_cluster
from nursery.cluster._state import live_pids as live_pids
from nursery.cluster._state import read_state as read_state
from nursery.cluster._state import supervisor_running as supervisor_running
from nursery.cluster._supervisor import Supervisor as Supervisor
