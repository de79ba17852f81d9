"""Drives Tributary's Prometheus-compatible API with a third-party client,
prometheus-api-client (PyPI), the way a script or notebook would.

Usage: prom_client.py <base-url> <token> <start> <end>
Prints one JSON document with what the client got back.
"""

import json
import sys
from datetime import datetime, timezone

from prometheus_api_client import PrometheusConnect

url, token, start, end = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
prom = PrometheusConnect(url=url, headers={"Authorization": f"Bearer {token}"}, disable_ssl=True)

out = {
    "metrics": prom.all_metrics(),
    "labels": prom.get_label_names(),
    "fleets": prom.get_label_values("fleet"),
    "health": prom.custom_query("1+1"),
    "instant": prom.custom_query('avg by (fleet) (last_over_time(engine_temp[3h]))'),
    "range": prom.custom_query_range(
        "sum by (fleet) (sum_over_time(engine_temp[1h]))",
        start_time=datetime.fromtimestamp(start, tz=timezone.utc),
        end_time=datetime.fromtimestamp(end, tz=timezone.utc),
        step="3600",
    ),
}
print(json.dumps(out))
