"""Two `zoo serve` replicas behind Caddy (deploy/Caddyfile), driven with the official
`openai` package. Usage: replicas_e2e.py ZOO CADDY MODEL CADDYFILE.

1. Sessions: requests with the same X-Session-Id header all land on one replica.
2. 32 concurrent streams through Caddy; replica A is killed with SIGKILL while they
   run: the streams it held fail with an error the client sees, the others finish.
3. Every request after the kill succeeds (through replica B).
4. Replica A is restarted on its port: Caddy's health check lets it back in and it
   takes traffic again.
Prints one JSON line of figures; any failed check raises. Nothing waits unbounded."""

import concurrent.futures as cf
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

try:  # the HTTP client openai itself uses (httpx2 in openai 3.x)
    import httpx2 as httpx
except ImportError:
    import httpx
import openai

zoo, caddy, model, caddyfile = sys.argv[1:5]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


port_a, port_b, port_lb = free_port(), free_port(), free_port()
procs = []


def start_replica(port):
    p = subprocess.Popen(
        [zoo, "serve", "--port", str(port), "--model", model, "--kv-cache-mib", "256"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    return p


def status(url):
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return None


def wait_until(what, check, limit):
    t = time.time()
    while not check():
        if time.time() - t > limit:
            raise AssertionError(f"{what} not within {limit} s")
        time.sleep(0.1)
    return time.time() - t


def requests_total(port):
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return int(re.search(r"^zoo_requests_total (\d+)$", text, re.M).group(1))


try:
    a = start_replica(port_a)
    start_replica(port_b)
    env = dict(os.environ, ZOO_LISTEN=f"127.0.0.1:{port_lb}",
               ZOO_UPSTREAMS=f"127.0.0.1:{port_a} 127.0.0.1:{port_b}", HOME=os.environ.get("HOME", "/tmp"))
    procs.append(subprocess.Popen([caddy, "run", "--config", caddyfile, "--adapter", "caddyfile"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for port in (port_a, port_b):
        wait_until(f"replica :{port} ready", lambda: status(f"http://127.0.0.1:{port}/health") == 200, 300)
    lb = f"http://127.0.0.1:{port_lb}"
    wait_until("Caddy routing", lambda: status(lb + "/v1/models") == 200, 30)
    client = openai.OpenAI(base_url=lb + "/v1", api_key="unused", max_retries=0, timeout=120)

    # 1. Sessions stick to one replica.
    placed = {port_a: 0, port_b: 0}
    for s in range(12):
        before = {p: requests_total(p) for p in placed}
        for _ in range(3):
            client.completions.create(model="zoo", prompt="Hi", max_tokens=1,
                                      extra_headers={"X-Session-Id": f"conversation-{s}"})
        delta = {p: requests_total(p) - before[p] for p in placed}
        assert sorted(delta.values()) == [0, 3], f"session {s} was split: {delta}"
        placed[max(delta, key=delta.get)] += 1
    assert all(placed.values()), f"12 sessions all on one replica: {placed}"

    # 2. 32 concurrent streams; replica A killed while they run.
    started = [0]

    def stream(i):
        finish, pieces = None, 0
        try:
            for chunk in client.completions.create(
                    model="zoo", prompt=f"Story {i}: once upon a time", max_tokens=32,
                    temperature=0, stream=True, extra_body={"ignore_eos": True}):
                if pieces == 0:
                    started[0] += 1
                pieces += 1
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish = chunk.choices[0].finish_reason
        except Exception as e:  # what the client sees when its replica dies
            return ("error", type(e).__name__)
        return ("ok", finish) if finish == "length" else ("error", f"ended without finish ({pieces} chunks)")

    with cf.ThreadPoolExecutor(32) as pool:
        futures = [pool.submit(stream, i) for i in range(32)]
        wait_until("streams started on both replicas", lambda: started[0] >= 8, 120)
        a.send_signal(signal.SIGKILL)
        killed_at = time.time()
        results = [f.result(timeout=300) for f in futures]
    failed = [r for r in results if r[0] == "error"]
    ok = [r for r in results if r[0] == "ok"]
    assert failed, "no stream was on the killed replica"
    assert len(failed) + len(ok) == 32

    # 3. After the kill, everything goes through B.
    after_failed = 0
    for i in range(16):
        try:
            r = client.completions.create(model="zoo", prompt=f"After {i}", max_tokens=2,
                                          extra_headers={"X-Session-Id": f"conversation-{i}"})
            assert r.choices[0].text is not None
        except Exception:
            after_failed += 1
    assert after_failed == 0, f"{after_failed} of 16 requests failed after the kill"

    # 4. A restarted replica rejoins and takes traffic.
    a = start_replica(port_a)
    wait_until("restarted replica ready", lambda: status(f"http://127.0.0.1:{port_a}/health") == 200, 300)
    ready_at = time.time()

    def a_takes_traffic():
        before = requests_total(port_a)
        for s in range(12):
            client.completions.create(model="zoo", prompt="Hi", max_tokens=1,
                                      extra_headers={"X-Session-Id": f"conversation-{s}"})
        return requests_total(port_a) > before

    rejoin_s = wait_until("restarted replica taking traffic", a_takes_traffic, 60)
    print(json.dumps({
        "sessions_on_a": placed[port_a], "sessions_on_b": placed[port_b],
        "streams": 32, "failed_during_kill": len(failed), "ok_during_kill": len(ok),
        "failures_seen": sorted({r[1] for r in failed}),
        "after_kill_requests": 16, "after_kill_failed": after_failed,
        "rejoined_within_s": round(time.time() - ready_at, 2), "rejoin_checks_s": round(rejoin_s, 2),
        "kill_to_end_s": round(time.time() - killed_at, 1),
    }))
finally:
    for p in procs:
        p.kill()
        p.wait()
