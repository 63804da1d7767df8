"""``DIR/prometheus.yml``: a Prometheus configuration that scrapes the cluster's instances where
they are (``--base-port``, ``--instances``, ``--host``), written by ``up`` every time it starts.

    prometheus --config.file=.nursery/cluster/prometheus.yml --storage.tsdb.path=.nursery/prometheus

Prometheus scrapes each instance directly; the proxy does not serve ``/metrics`` (conf/Caddyfile).
The recording rules and alerts of ``conf/prometheus-rules.yml`` are included when this checkout
has them. compose.yaml uses ``conf/prometheus-compose.yml``, the same job for its containers.
"""

from __future__ import annotations

import json
from pathlib import Path

PROMETHEUS_FILE = "prometheus.yml"
SCRAPE_INTERVAL = "5s"


def find_rules() -> Path | None:
    """``conf/prometheus-rules.yml`` of this checkout, else of the working directory."""
    for base in (Path(__file__).resolve().parent.parent.parent, Path.cwd()):
        candidate = base / "conf" / "prometheus-rules.yml"
        if candidate.is_file():
            return candidate
    return None


def prometheus_config(targets: list[str], rules: Path | None) -> str:
    """The configuration for ``targets`` (host:port of each instance). JSON strings are valid
    YAML scalars: no YAML library needed."""
    lines = [
        "# Written by `nursery cluster up` for this cluster's instances; rewritten at each start.",
        "global:",
        f"  scrape_interval: {SCRAPE_INTERVAL}",
        "  scrape_timeout: 4s",
        "  evaluation_interval: 15s",
    ]
    if rules is not None:
        lines += ["rule_files:", f"  - {json.dumps(str(rules))}"]
    lines += [
        "scrape_configs:",
        "  - job_name: nursery",
        "    metrics_path: /metrics",
        "    static_configs:",
        f"      - targets: {json.dumps(targets)}",
        "        labels:",
        "          deployment: local-cluster",
    ]
    return "\n".join(lines) + "\n"


def write_prometheus_config(directory: Path, targets: list[str]) -> Path:
    path = directory / PROMETHEUS_FILE
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(prometheus_config(targets, find_rules()))
    tmp.replace(path)
    return path
