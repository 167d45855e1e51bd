"""Drives a running `zoo serve` with the official `openai` package (and httpx for a
client that hangs up mid-stream). Usage: openai_e2e.py BASE_URL. Prints one JSON line
of load-test figures; any failed check raises."""

import asyncio
import json
import re
import statistics
import sys
import time

try:  # the HTTP client openai itself uses (httpx2 in openai 3.x)
    import httpx2 as httpx
except ImportError:
    import httpx
import openai

base = sys.argv[1]
client = openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0)


def metric(name):
    text = httpx.get(base + "/metrics").text
    return int(re.search(rf"^{name} (\d+)$", text, re.M).group(1))


def generated_tokens():
    return metric("zoo_generated_tokens_total")


# 1. A completion.
first = client.completions.create(model="zoo", prompt="The capital of France is", max_tokens=8, temperature=0)
assert first.choices[0].text.strip().startswith("Paris"), first
assert first.usage.completion_tokens == 8, first.usage

# 2. A streamed chat completion, equal to the same request unstreamed.
messages = [{"role": "user", "content": "Say hi in three words."}]
pieces = []
finish = None
for chunk in client.chat.completions.create(model="zoo", messages=messages, max_tokens=12, temperature=0, stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.choices and chunk.choices[0].finish_reason:
        finish = chunk.choices[0].finish_reason
assert len(pieces) >= 3 and finish in ("stop", "length"), (pieces, finish)
whole = client.chat.completions.create(model="zoo", messages=messages, max_tokens=12, temperature=0)
assert whole.choices[0].message.content == "".join(pieces), (whole, pieces)

# 3. A bad request is a 400 with an OpenAI error body.
try:
    client.completions.create(model="zoo", prompt="x", temperature=7)
    raise AssertionError("temperature 7 was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400 and "temperature" in str(e), e

# 4. A client that disconnects mid-stream: its generation stops, the next request is
# unaffected.
before = generated_tokens()
with httpx.stream("POST", base + "/v1/completions", timeout=60,
                  json={"prompt": "Once upon a time", "max_tokens": 400, "temperature": 0, "stream": True}) as r:
    seen = 0
    for line in r.iter_lines():
        if line.startswith("data:"):
            seen += 1
        if seen >= 3:
            break
after = client.completions.create(model="zoo", prompt="The capital of France is", max_tokens=8, temperature=0)
assert after.choices[0].text == first.choices[0].text, (after, first)
cancelled_tokens = generated_tokens() - before - 8
assert cancelled_tokens < 100, f"the disconnected request went on for {cancelled_tokens} tokens"
# The engine freed its sequence: counted as cancelled, nothing left running.
for _ in range(100):
    if metric("zoo_cancelled_total") >= 1 and metric("zoo_sequences_running") == 0:
        break
    time.sleep(0.02)
else:
    raise AssertionError("the disconnected request's sequence was not freed")

# 5. 16 concurrent streams of different prompts with fixed seeds: each text equals the
# same request sent alone (the engine's results do not depend on the batch).
def request16(i):
    return dict(model="zoo", prompt=f"Story {i}: Once upon a time, in a land of {i * 7} hills,",
                max_tokens=24, temperature=0.8, top_p=0.95, seed=1000 + i)


async def streamed(ac, i):
    text = ""
    async for chunk in await ac.completions.create(stream=True, **request16(i)):
        if chunk.choices:
            text += chunk.choices[0].text
    return text


async def sixteen():
    ac = openai.AsyncOpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=600)
    return await asyncio.gather(*(streamed(ac, i) for i in range(16)))


together = asyncio.run(sixteen())
for i, text in enumerate(together):
    alone = client.completions.create(**request16(i)).choices[0].text
    assert text == alone, (i, text, alone)
assert len(set(together)) > 8, together

# 6. n = 2, logprobs, a prompt list and the usage chunk.
two = client.completions.create(model="zoo", prompt="Hello", max_tokens=6, temperature=0.9, seed=3,
                                n=2, logprobs=2)
assert [c.index for c in two.choices] == [0, 1], two
for c in two.choices:
    lp = c.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6, lp
    assert all(x <= 0 for x in lp.token_logprobs) and all(len(t) == 2 for t in lp.top_logprobs), lp
assert two.usage.completion_tokens == 12, two.usage
chat_lp = client.chat.completions.create(model="zoo", messages=messages, max_tokens=5, temperature=0,
                                         logprobs=True, top_logprobs=3)
content = chat_lp.choices[0].logprobs.content
assert len(content) == 5 and all(len(t.top_logprobs) == 3 for t in content), content
# Greedy: the chosen token is the most likely one.
assert all(abs(t.logprob - t.top_logprobs[0].logprob) < 1e-6 for t in content), content
# Tokens join to the text and text_offset indexes it (in characters), streamed or not,
# also where a character spans several tokens. Past the tokens, the text may hold only
# the U+FFFD of a character cut off by max_tokens (its bytes flushed at the end).
def joins(tokens, text):
    joined = "".join(tokens)
    return text.startswith(joined) and set(text[len(joined):]) <= {"\ufffd"}


wide = dict(model="zoo", prompt="Chinese: 你好，世界。我喜欢", max_tokens=12, temperature=0, logprobs=1)
whole = client.completions.create(**wide).choices[0]
assert any(ord(ch) > 0x7FF for ch in whole.text), whole.text  # characters of 3 UTF-8 bytes
assert joins(whole.logprobs.tokens, whole.text), (whole.logprobs.tokens, whole.text)
for tok, off in zip(whole.logprobs.tokens, whole.logprobs.text_offset):
    assert off <= len(whole.text) and whole.text[off:].startswith(tok), (tok, off, whole.text)
streamed = [c.choices[0].logprobs for c in client.completions.create(**wide, stream=True)
            if c.choices and c.choices[0].logprobs]
assert [o for lp in streamed for o in lp.text_offset] == whole.logprobs.text_offset, streamed
chat_wide = client.chat.completions.create(model="zoo", messages=[{"role": "user", "content": "Say hello in Chinese."}],
                                           max_tokens=12, temperature=0, logprobs=True)
answer = chat_wide.choices[0]
assert any(ord(ch) > 0x7FF for ch in answer.message.content), answer
assert joins([t.token for t in answer.logprobs.content], answer.message.content), answer
assert all(bytes(t.bytes) == t.token.encode() for t in answer.logprobs.content), answer
listed = client.completions.create(model="zoo", prompt=["The capital of France is", "One, two,"],
                                   max_tokens=8, temperature=0)
assert listed.choices[0].text == first.choices[0].text and len(listed.choices) == 2, listed
usage = [c.usage for c in client.completions.create(model="zoo", prompt="Hi", max_tokens=3, stream=True,
                                                    stream_options={"include_usage": True}) if c.usage]
assert len(usage) == 1 and usage[0].completion_tokens == 3, usage

# 7. Load: 64 concurrent streamed chat requests.
async def one(ac, i):
    t0 = time.perf_counter()
    ttft = None
    n = 0
    try:
        stream = await ac.chat.completions.create(
            model="zoo", messages=[{"role": "user", "content": f"Count to {i % 5 + 2}."}],
            max_tokens=16, temperature=0, stream=True)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                if ttft is None:
                    ttft = time.perf_counter() - t0
                n += 1
        return ("ok", ttft, n)
    except openai.RateLimitError:
        return ("429", None, 0)
    except Exception as e:  # noqa: BLE001 - reported and failed below
        return ("fail", repr(e), 0)


async def load():
    ac = openai.AsyncOpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=600)
    t0 = time.perf_counter()
    results = await asyncio.gather(*(one(ac, i) for i in range(64)))
    return results, time.perf_counter() - t0


results, wall = asyncio.run(load())
ok = [r for r in results if r[0] == "ok"]
failed = [r for r in results if r[0] == "fail"]
rejected = sum(1 for r in results if r[0] == "429")
ttfts = sorted(r[1] for r in ok if r[1] is not None)
tokens = sum(r[2] for r in ok)
p = lambda q: ttfts[min(len(ttfts) - 1, int(q * len(ttfts)))] if ttfts else None
print(json.dumps({"requests": 64, "ok": len(ok), "rejected_429": rejected, "failed": len(failed),
                  "wall_s": round(wall, 2), "tokens": tokens, "tokens_per_s": round(tokens / wall, 1),
                  "ttft_p50_s": p(0.5), "ttft_p99_s": p(0.99)}))
assert not failed, failed
assert ok, "no request succeeded"
