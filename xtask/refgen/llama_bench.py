"""llama.cpp's speed on a GGUF, measured like `llama-bench -p P -n N -t T` (random
prompt tokens in one batch; then N single-token decode steps; fresh cache each
repetition), through llama-cpp-python's low-level API. Prints one JSON object.
Usage: llama_bench.py MODEL.gguf P N REPS THREADS"""

import json
import random
import resource
import sys
import time

import llama_cpp

path, P, N, reps, threads = sys.argv[1], *map(int, sys.argv[2:6])
t0 = time.perf_counter()
llm = llama_cpp.Llama(model_path=path, n_ctx=P + N + 8, n_batch=P, n_ubatch=P, n_threads=threads,
                      n_threads_batch=threads, verbose=False, logits_all=False)
load_s = time.perf_counter() - t0
vocab = llm.n_vocab()
rng = random.Random(0)
prompt = [rng.randrange(vocab) for _ in range(P)]
pp, tg = [], []
for rep in range(reps + 1):
    llm.reset()
    llm._ctx.kv_cache_clear() if hasattr(llm._ctx, "kv_cache_clear") else None
    t = time.perf_counter()
    llm.eval(prompt)
    pp_s = time.perf_counter() - t
    t = time.perf_counter()
    tok = prompt[-1]
    for _ in range(N):
        llm.eval([tok])
        tok = rng.randrange(vocab)
    tg_s = time.perf_counter() - t
    if rep > 0:
        pp.append(P / pp_s)
        tg.append(N / tg_s)
mean = lambda v: sum(v) / len(v)
print(json.dumps({"implementation": f"llama.cpp (llama-cpp-python {llama_cpp.__version__})", "threads": threads,
                  "load_s": load_s, "pp": {"tokens": P, "tok_s": mean(pp)}, "tg": {"tokens": N, "tok_s": mean(tg)},
                  "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
