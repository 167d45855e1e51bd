"""Hostile clients against a running `zoo serve` (started with --parallel 8
--queue-depth 16 --kv-cache-mib 16: the KV store fills with cached prefixes up to its
budget by design, and a 16 MiB one has filled within the first 100 requests, so that the
resident set after them is the baseline a leak would grow from). Usage: hostile_e2e.py BASE_URL [REQUESTS]. Every answer is checked
for its status; the server must keep serving throughout and its resident set after the
random requests must be within 10 % of before. Prints one JSON line of figures; any
failed check raises. Every socket has a deadline: nothing waits unbounded."""

import concurrent.futures as cf
import json
import random
import re
import socket
import sys
import time

try:  # the HTTP client openai itself uses (httpx2 in openai 3.x)
    import httpx2 as httpx
except ImportError:
    import httpx

base = sys.argv[1]
total_random = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
host, port = base.removeprefix("http://").split(":")
port = int(port)
client = httpx.Client(base_url=base, timeout=120)
counts = {}
t0 = time.time()
sections = {}


def section(name):
    sections[name] = round(time.time() - t0, 1)


def metric(name):
    text = client.get("/metrics").text
    return int(re.search(rf"^{name} (\d+)$", text, re.M).group(1))


def alive():
    r = client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 1})
    assert r.status_code == 200, r.text


def expect(kind, status, r):
    counts[kind] = counts.get(kind, 0) + 1
    assert r.status_code == status, f"{kind}: expected {status}, got {r.status_code}: {r.text[:300]}"
    if status >= 400:
        body = r.json()
        assert "error" in body and body["error"]["message"], f"{kind}: {r.text[:300]}"


def raw(data, read=True, timeout=30):
    """Sends bytes on a fresh connection and returns the status code (None if closed)."""
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.sendall(data)
        if not read:
            return None
        out = s.recv(4096)
        m = re.match(rb"HTTP/1\.[01] (\d{3})", out)
        return int(m.group(1)) if m else None
    finally:
        s.close()


def post_bytes(path, body):
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode() + body


# 1. Malformed, oversized and non-UTF-8 bodies.
for path in ("/v1/completions", "/v1/chat/completions"):
    expect("malformed json", 400, client.post(path, content=b"{\"prompt\": ", headers={"content-type": "application/json"}))
    expect("not an object", 400, client.post(path, content=b"[1,2,3]", headers={"content-type": "application/json"}))
    expect("empty body", 400, client.post(path, content=b"", headers={"content-type": "application/json"}))
    expect("oversized body", 413, client.post(path, content=b"{\"prompt\": \"" + b"a" * (9 << 20) + b"\"}",
                                             headers={"content-type": "application/json"}))
    assert raw(post_bytes(path, b"{\"prompt\": \"\xff\xfe\", \"max_tokens\": 1, \"messages\": [{\"role\": \"user\", \"content\": \"\xc3\x28\"}]}")) == 400
    counts["invalid utf-8"] = counts.get("invalid utf-8", 0) + 1
    alive()

section("bodies")

# 2. Wrong types and out-of-range values for every parameter.
WRONG = {
    "prompt": [5, None, {"a": 1}, [[]], [1.5]],
    "max_tokens": ["8", -1, 0, 1.5, [], 10 ** 30],
    "temperature": ["hot", -0.5, 100, [], None and 0],
    "top_p": ["x", -0.1, 1.5],
    "top_k": ["x", -3, 1.5],
    "min_p": ["x", -0.1, 2],
    "n": ["2", 0, -1, 1000],
    "seed": ["x", -1, 1.5, 2 ** 70],
    "stop": [5, [1, 2], {"a": "b"}, ["x"] * 100],
    "stream": ["yes", 1, []],
    "logprobs": ["x", -1, 1000],
    "presence_penalty": ["x", -3, 3],
    "frequency_penalty": ["x", -3, 3],
    "stream_options": ["x", 5, {"include_usage": "yes"}],
}
for param, values in WRONG.items():
    for v in values:
        if v is None and param != "prompt":
            continue
        body = {"prompt": "Hi", "max_tokens": 1, param: v}
        expect(f"wrong {param}", 400, client.post("/v1/completions", json=body))
for bad_messages in (5, [], [{"role": "user"}], [{"role": 5, "content": "x"}], [{"role": "user", "content": 5}], "hi"):
    expect("wrong messages", 400, client.post("/v1/chat/completions", json={"messages": bad_messages, "max_tokens": 1}))
expect("prompt past the context", 400, client.post("/v1/completions", json={"prompt": "word " * 20000, "max_tokens": 1}))
# More choices than the queue ever holds (16 here): a 400 naming `n`, not a 429 that
# invites a retry as sure to fail.
r = client.post("/v1/completions", json={"prompt": ["a", "b", "c"], "n": 8, "max_tokens": 1})
expect("choices past the queue", 400, r)
assert r.json()["error"]["param"] == "n", r.text
# OpenAI fields zoo does not implement: a 400 naming them, never an answer that ignores them.
for path, field, value in [
    ("/v1/completions", "echo", True),
    ("/v1/completions", "best_of", 3),
    ("/v1/completions", "logit_bias", {"1": 5}),
    ("/v1/chat/completions", "tools", [{"type": "function", "function": {"name": "f"}}]),
    ("/v1/chat/completions", "response_format", {"type": "json_object"}),
]:
    body = {"prompt": "Hi", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1, field: value}
    r = client.post(path, json=body)
    expect(f"unsupported {field}", 400, r)
    assert r.json()["error"]["param"] == field, r.text
# A temperature too small to divide by samples greedily, and a stream beside it goes on.
with httpx.stream("POST", base + "/v1/completions", timeout=120,
                  json={"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0,
                        "stream": True, "ignore_eos": True}) as beside:
    lines = beside.iter_lines()
    assert any(line.startswith("data:") for line in lines)
    tiny = client.post("/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 4, "temperature": 1e-38})
    expect("tiny temperature", 200, tiny)
    rest = [line for line in lines if line.startswith("data:")]
    assert rest[-1] == "data: [DONE]" and not any('"error"' in line for line in rest), rest[-3:]
    assert '"finish_reason":"length"' in rest[-2].replace(" ", ""), rest[-2:]
alive()

section("parameters")

# 3. Slow clients: headers dribbled, a body that never comes. Others are served meanwhile.
slow = []
for _ in range(4):
    s = socket.create_connection((host, port), timeout=60)
    s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
    slow.append(s)
stalled = socket.create_connection((host, port), timeout=60)
stalled.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"pro")
stalled_headers = socket.create_connection((host, port), timeout=60)
stalled_headers.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-")
t = time.time()
alive()
served_during_slow_s = time.time() - t
for s in slow:  # dribble the rest of the headers a byte at a time
    for b in b"Content-Type: application/json\r\n":
        s.sendall(bytes([b]))
    s.sendall(b"Content-Length: 31\r\nConnection: close\r\n\r\n{\"prompt\":\"Hi\",\"max_tokens\":1} ")
for s in slow:
    out = s.recv(4096)
    assert out.startswith(b"HTTP/1.1 200"), out[:200]
    s.close()
counts["dribbled headers"] = len(slow)
# The stalled body and the stalled headers: the server gives up on each (408, or the
# connection closed) within its 30 s timeouts, and never answers them as requests.
stalled_s = {}
for what, s in (("body", stalled), ("headers", stalled_headers)):
    try:
        out = s.recv(4096)
    except (ConnectionResetError, socket.timeout) as e:
        out = repr(e).encode()
    stalled_s[what] = round(time.time() - t, 1)
    assert not out.startswith(b"HTTP/1.1 200"), out[:200]
    assert stalled_s[what] < 45, f"stalled {what} held the connection {stalled_s[what]} s: {out[:100]}"
    counts[f"stalled {what}"] = 1
    s.close()

section("slow clients")

# 4. Clients that vanish while queued or mid-stream: their sequences are freed.
cancelled_before = metric("zoo_cancelled_total")
socks = []
for i in range(12):
    body = json.dumps({"prompt": f"Tale {i}", "max_tokens": 200, "stream": True, "ignore_eos": True}).encode()
    s = socket.create_connection((host, port), timeout=60)
    s.sendall(post_bytes("/v1/completions", body))
    socks.append(s)
time.sleep(1.0)
socks[0].recv(256)  # one is streaming for sure
for s in socks:
    s.close()
t = time.time()
while metric("zoo_sequences_running") + metric("zoo_sequences_waiting") > 0:
    assert time.time() - t < 60, "vanished clients' sequences were not freed"
    time.sleep(0.1)
counts["vanished clients"] = len(socks)
alive()
# Choices still queued when their client vanishes are cancelled in the queue, never
# admitted: 16 choices, 8 slots, the client gone after its first chunk. Every first
# admission looks the prompt up in the prefix cache, so the lookups count admissions.
plen = client.post("/v1/completions", json={"prompt": "A queue of tales", "max_tokens": 1}).json()["usage"]["prompt_tokens"]
lookups = metric("zoo_prefix_cache_lookup_tokens_total")
body = json.dumps({"prompt": ["A queue of tales", "A queue of tales"], "n": 8, "max_tokens": 2000,
                   "stream": True, "ignore_eos": True}).encode()
s = socket.create_connection((host, port), timeout=60)
s.sendall(post_bytes("/v1/completions", body))
s.recv(256)
s.close()
t = time.time()
while metric("zoo_sequences_running") + metric("zoo_sequences_waiting") > 0:
    assert time.time() - t < 60, "the vanished client's choices were not freed"
    time.sleep(0.1)
admitted = (metric("zoo_prefix_cache_lookup_tokens_total") - lookups) // plen
assert admitted <= 8, f"{admitted} of 16 choices were admitted after their client had gone"
counts["vanished queued choices"] = 16 - admitted
alive()

section("vanished clients")

# 5. Random requests, valid and not, 8 at a time; the resident set stays flat.
rng = random.Random(7)


def random_request(i):
    chat = rng.random() < 0.3
    path = "/v1/chat/completions" if chat else "/v1/completions"
    prompt = rng.choice(["Hi", "Once", "The cat", ["a", "b"]])
    body = {"max_tokens": rng.randint(1, 3)}
    if chat:
        body["messages"] = [{"role": "user", "content": str(prompt)}]
    else:
        body["prompt"] = prompt
    valid = True
    for param, values in WRONG.items():
        if chat and param in ("prompt", "logprobs"):
            continue
        if rng.random() < 0.06:
            v = rng.choice(values)
            if v is None and param != "prompt":
                continue
            body[param] = v
            valid = False
    if valid and rng.random() < 0.3:
        body.update({"temperature": rng.uniform(0, 1.5), "top_p": rng.uniform(0.1, 1), "seed": rng.randint(0, 99)})
    return path, body, valid


def send(req):
    path, body, valid = req
    r = client.post(path, json=body)
    ok = r.status_code == (200 if valid else 400)
    return ok, r.status_code, path, body


requests = [random_request(i) for i in range(total_random)]
warm = 100
series = []  # (requests done, resident MiB): the soak's record
with cf.ThreadPoolExecutor(8) as pool:
    first = list(pool.map(send, requests[:warm]))
    rss_before = metric("zoo_resident_bytes")
    rest = []
    for at in range(warm, total_random, 500):
        rest += list(pool.map(send, requests[at:at + 500]))
        series.append((warm + len(rest), round(metric("zoo_resident_bytes") / 2 ** 20, 1)))
rss_after = metric("zoo_resident_bytes")
bad = [r for r in first + rest if not r[0]]
assert not bad, f"{len(bad)} wrong statuses, e.g. {bad[:3]}"
statuses = {}
for r in first + rest:
    statuses[r[1]] = statuses.get(r[1], 0) + 1
growth = rss_after / rss_before - 1
print(json.dumps({"rss_series_mib": series}), file=sys.stderr)
assert abs(growth) <= 0.10, f"resident set {rss_before} -> {rss_after} ({growth:+.1%})"
alive()
section("random requests")
print(json.dumps({"sections_s": sections, "checks": counts, "random_requests": total_random, "statuses": statuses,
                  "rss_before_mib": round(rss_before / 2 ** 20, 1), "rss_after_mib": round(rss_after / 2 ** 20, 1),
                  "rss_growth": round(growth, 4), "rss_series_mib": series, "served_during_slow_s": round(served_during_slow_s, 2),
                  "stalled_closed_after_s": stalled_s}))
