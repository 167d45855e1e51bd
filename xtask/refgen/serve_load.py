"""HTTP load driver of `cargo xtask bench --serve`: streams /v1/completions requests at an
OpenAI-compatible server (zoo serve or llama-server), L at a time for each concurrency
level L, and prints one JSON object per level on stdout (progress on stderr).

Usage: serve_load.py --url http://127.0.0.1:PORT --server NAME [--levels 1,4,16,64]
                     [--new-tokens 128] [--seed 42] [--level-timeout-s 900]

Each level sends 2*L requests with L in flight (a client sends its next request when its
last one ends). Measured per level:
- tok_s: completion tokens of the level / its wall time. Tokens are counted by the
  server (its Prometheus counter, the same for every request of the level) where it
  exposes one, else from each stream's `usage`, else as the chunks that carried text.
- ttft_s: request sent -> first chunk with text, p50/p99 over the level's requests.
- itl_s: time between consecutive chunks with text, p50/p99 over all the level's gaps.
- errors: non-200 answers, error events, streams that ended without [DONE], and
  requests cut off by the level's time limit.

Prompts (~128 tokens) share a prefix (~96 tokens), so that a server which reuses a
cached prefix may, and end in a distinct suffix (no two prompts of a run are equal).
`ignore_eos` is sent to every server (both honour it), so every request generates its
new tokens in full; the counted tokens are what was generated.
"""

import argparse
import asyncio
import codecs
import contextlib
import io
import json
import math
import sys
import time

try:  # the openai package's own client (openai >= 3 ships it as httpx2)
    import httpx2 as httpx
except ImportError:
    import httpx

# Counters of generated tokens, by server: zoo serve's, llama-server's (with --metrics).
TOKEN_COUNTERS = ("zoo_generated_tokens_total", "llamacpp:tokens_predicted_total")


def zen_of_python():
    """The shared text: PEP 20, bundled with every CPython as the `this` module
    (ROT13-encoded in Lib/this.py; importing it prints it, hence the redirect)."""
    with contextlib.redirect_stdout(io.StringIO()):
        import this
    return codecs.decode(this.s, "rot13")


ZEN = zen_of_python().splitlines()
# The title and the first 11 aphorisms: 76 to 90 tokens with the known models'
# tokenizers, whole prompts 107 to 134 (the warm-up request reports the exact length).
SHARED = "\n".join(ZEN[:13]) + "\n"
APHORISMS = [line for line in ZEN[2:] if line]


def prompt(i):
    """Request i's prompt: the shared text, then a suffix (30 to 45 tokens) naming i."""
    a = APHORISMS[i % len(APHORISMS)]
    return (f"{SHARED}\nLetter {i} from a reader, written in {1900 + i % 120}, on why "
            f"\"{a}\" matters to programmers. It begins:\n")


def body(i, args, stream=True, max_tokens=None):
    return {"model": "bench", "prompt": prompt(i), "max_tokens": max_tokens or args.new_tokens,
            "temperature": 0, "seed": args.seed, "stream": stream, "ignore_eos": True}


def percentile(values, p):
    """Nearest-rank percentile; None without values."""
    if not values:
        return None
    v = sorted(values)
    return v[max(0, math.ceil(p / 100 * len(v)) - 1)]


async def generated_tokens(client, url):
    """The server's count of generated tokens so far, or None without such a counter."""
    try:
        r = await client.get(f"{url}/metrics")
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    for line in r.text.splitlines():
        name, _, value = line.partition(" ")
        if name in TOKEN_COUNTERS:
            return float(value)
    return None


async def one(client, url, i, args, out):
    """One streamed request; appends its record to `out` as soon as it starts, so that a
    request cut off by the time limit is still seen (as an error)."""
    rec = {"ttft": None, "itl": [], "chunks": 0, "usage": None, "error": "cut off by the time limit"}
    out.append(rec)
    t0 = time.perf_counter()
    last = None
    try:
        async with client.stream("POST", f"{url}/v1/completions", json=body(i, args)) as r:
            if r.status_code != 200:
                rec["error"] = f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
                return
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    rec["error"] = None
                    return
                obj = json.loads(data)
                if "error" in obj:
                    rec["error"] = f"error event: {obj['error']}"
                    return
                if obj.get("usage"):
                    rec["usage"] = obj["usage"].get("completion_tokens")
                choices = obj.get("choices") or [{}]
                if choices[0].get("text"):
                    now = time.perf_counter()
                    if last is None:
                        rec["ttft"] = now - t0
                    else:
                        rec["itl"].append(now - last)
                    last = now
                    rec["chunks"] += 1
            rec["error"] = "the stream ended without [DONE]"
    except httpx.HTTPError as e:
        rec["error"] = f"{type(e).__name__}: {e}"


async def level(client, url, L, first, args):
    """Level L: requests first..first+2L, L in flight; returns its JSON record."""
    todo = iter(range(first, first + 2 * L))
    recs = []

    async def client_loop():
        for i in todo:  # a shared iterator: each index is taken once
            await one(client, url, i, args, recs)

    before = await generated_tokens(client, url)
    t0 = time.perf_counter()
    timed_out = False
    try:
        await asyncio.wait_for(asyncio.gather(*(client_loop() for _ in range(L))), args.level_timeout_s)
    except asyncio.TimeoutError:
        timed_out = True
    wall = time.perf_counter() - t0
    after = await generated_tokens(client, url)
    ok = [r for r in recs if r["error"] is None]
    errors = [r["error"] for r in recs if r["error"] is not None]
    errors += ["not sent before the time limit"] * (2 * L - len(recs))
    if before is not None and after is not None:
        tokens, source = after - before, "server counter"
    elif ok and all(r["usage"] is not None for r in ok):
        tokens, source = sum(r["usage"] for r in ok), "stream usage"
    else:
        tokens, source = sum(r["chunks"] for r in ok), "text chunks"
    ttft = [r["ttft"] for r in ok if r["ttft"] is not None]
    itl = [d for r in ok for d in r["itl"]]
    return {
        "server": args.server, "level": L, "requests": 2 * L, "ok": len(ok), "errors": len(errors),
        "first_error": errors[0] if errors else None, "timed_out": timed_out,
        "wall_s": wall, "completion_tokens": tokens, "tokens_counted_by": source,
        "tok_s": tokens / wall if wall > 0 else None,
        "ttft_s": {"p50": percentile(ttft, 50), "p99": percentile(ttft, 99)},
        "itl_s": {"p50": percentile(itl, 50), "p99": percentile(itl, 99)},
    }


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--server", required=True, help="the name put in each record")
    p.add_argument("--levels", default="1,4,16,64")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--level-timeout-s", type=float, default=900)
    args = p.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    limits = httpx.Limits(max_connections=max(levels) + 4, max_keepalive_connections=max(levels) + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(None), limits=limits, trust_env=False) as client:
        # Warm-up, not measured: the first request pays for page faults and allocations;
        # its usage gives the prompt's length in this model's tokens.
        r = await client.post(f"{args.url}/v1/completions", json=body(0, args, stream=False, max_tokens=8))
        r.raise_for_status()
        prompt_tokens = r.json().get("usage", {}).get("prompt_tokens")
        print(f"serve_load: {args.server}: warm; prompts of ~{prompt_tokens} tokens", file=sys.stderr)
        first = 1
        for L in levels:
            print(f"serve_load: {args.server}: level {L} ({2 * L} requests, {L} at a time)",
                  file=sys.stderr, flush=True)
            rec = await level(client, args.url, L, first, args)
            first += 2 * L
            rec.update(prompt_tokens=prompt_tokens, new_tokens=args.new_tokens)
            print(json.dumps(rec), flush=True)
            print(f"serve_load: {args.server}: level {L}: {rec['tok_s']:.1f} tok/s, "
                  f"{rec['errors']} errors, {rec['wall_s']:.1f} s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    asyncio.run(main())
