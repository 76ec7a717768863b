"""Parses an OpenMetrics scrape (stdin) with the Prometheus project's own
parser and prints every sample as JSON lines: {"name", "labels", "value"}.
Exits non-zero if the text is not valid OpenMetrics."""

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

for family in text_string_to_metric_families(sys.stdin.read()):
    for sample in family.samples:
        print(json.dumps({"family": family.name, "type": family.type, "name": sample.name,
                          "labels": sample.labels, "value": sample.value}))
