# Latency of the dashboard read API: for each request, N sequential GETs over one keep-alive
# connection; prints a Markdown table of p50/p99/max in ms and the X-Cache header seen.
# Usage: python3 benches/read_api/latency.py PORT KEY N
import http.client, sys, time, json
port, key, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
paths = [
    "/api/errors", "/api/errors?level=error", "/api/errors?source=frontend",
    "/api/errors?environment=canary", "/api/errors?source=cron",
    "/api/errors?environment=staging", "/api/errors?resolved=false&source=cron", "/api/errors?resolved=false", "/api/errors?q=module%2042",
    "/api/errors?since=2026-11-22T00:00:00Z", "/api/errors?sort=count", "/api/errors?sort=first_seen&order=asc",
    "/api/errors?offset=5000", "/api/stats", "/api/analytics/trends?period=week&group_by=day",
    "/api/analytics/trends?period=month&group_by=day", "/api/analytics/trends?period=day&group_by=hour",
]
c = http.client.HTTPConnection("127.0.0.1", port)
print(f"| request | p50 ms | p99 ms | max ms | X-Cache |")
print(f"|---|---|---|---|---|")
for p in paths:
    ts = []
    cache = None
    for i in range(n):
        t = time.perf_counter()
        c.request("GET", p, headers={"X-API-Key": key})
        r = c.getresponse(); body = r.read()
        ts.append((time.perf_counter() - t) * 1000)
        assert r.status == 200, (p, r.status, body[:200])
        cache = r.getheader("x-cache")
    ts.sort()
    print(f"| `GET {p}` | {ts[len(ts)//2]:.1f} | {ts[min(len(ts)-1, int(len(ts)*0.99))]:.1f} | {ts[-1]:.1f} | {cache} |")
