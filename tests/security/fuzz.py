"""Reading a schemathesis run's NDJSON report: cases per operation, statuses, failures.

The report has one JSON event per line; each ``ScenarioFinished`` event carries a recorder
with the scenario's cases (by id), the request/response of each case (``interactions``) and
the checks run on it. Stateful scenarios are labelled "Stateful tests" as a whole; their
requests are counted under the operation they called.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class FuzzReport:
    cases: Counter[str] = field(default_factory=Counter)  # per recorder label
    phases: Counter[str] = field(default_factory=Counter)
    statuses: dict[str, Counter[int | None]] = field(default_factory=lambda: defaultdict(Counter))
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.cases.values())

    def table(self) -> str:
        lines = [f"{count:6d}  {label}" for label, count in sorted(self.cases.items())]
        lines.append(f"{self.total:6d}  in all ({', '.join(f'{p} {n}' for p, n in sorted(self.phases.items()))})")
        return "\n".join(lines)


def read_report(directory: Path) -> FuzzReport:
    (path,) = directory.glob("ndjson-*.ndjson")
    report = FuzzReport()
    for line in path.read_text().splitlines():
        event: dict[str, Any] = json.loads(line)
        kind, body = next(iter(event.items()))
        if kind == "NonFatalError" or kind == "FatalError":
            report.errors.append(f"{body.get('label')}: {body.get('value')}")
        if kind != "ScenarioFinished":
            continue
        recorder = body["recorder"]
        cases = recorder.get("cases", {})
        report.cases[recorder["label"]] += len(cases)
        report.phases[body["phase"]] += len(cases)
        for case_id, case in cases.items():
            value = case["value"]
            operation = f"{value['method']} {value['path']}"
            interaction = recorder.get("interactions", {}).get(case_id) or {}
            response = interaction.get("response") or {}
            report.statuses[operation][response.get("status_code")] += 1
        for case_id, checks in recorder.get("checks", {}).items():
            for check in checks:
                if check.get("status") == "failure":
                    report.failures.append(f"{check.get('name')} {_describe(cases.get(case_id))}:"
                                           f" {check.get('failure_info') or check}")
    return report


def _describe(case: dict[str, Any] | None) -> str:
    if case is None:
        return "?"
    value = case["value"]
    return f"{value['method']} {value['path']} {json.dumps(value.get('body'))[:200]}"
