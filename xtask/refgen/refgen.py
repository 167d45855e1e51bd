"""Fixtures and references for zoo's conformance suite, made with independent code.

Run through `cargo xtask fixtures` and `cargo xtask refgen` (which pass the registry as
JSON); see docs/conformance.md. Safetensors fixtures are written by HF transformers
(`from_config` with seeded weights, `save_pretrained`); GGUF fixtures are converted from
them by llama.cpp's own `convert_hf_to_gguf.py` and quantized by llama.cpp
(`llama_model_quantize` through llama-cpp-python). References are the logits of
transformers (PyTorch, CPU, f32) for safetensors and of llama.cpp (llama-cpp-python,
CPU) for GGUF.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PROMPTS = [
    [256, 72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100],
    [256, 84, 104, 101],
    [256, 49, 50, 51, 52, 53, 54, 55, 56, 57, 48, 33, 63],
]
GREEDY_TOKENS = 16
# The reference's own top logits at every greedy step, so that a test judges a near tie
# by the reference's gap between its token and zoo's (rule 1, docs/conformance.md).
GREEDY_TOP = 20


def top(logits, k=GREEDY_TOP):
    """The k largest logits as [id, logit] pairs, largest first (lower id first on ties,
    as the greedy argmax)."""
    import numpy as np
    a = np.asarray(logits, dtype=np.float32)
    order = sorted(range(len(a)), key=lambda i: (-float(a[i]), i))[:k]
    return [[int(i), float(a[i])] for i in order]
# 256 byte tokens, <s> = 256, </s> = 257, then the merged tokens of MERGES (llama.cpp
# refuses a BPE vocabulary without merges).
MERGES = [("Ġ", "t"), ("h", "e")]
BYTE_VOCAB = 258 + len(MERGES)


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    out = [None] * 256
    for b, c in zip(bs, cs):
        out[b] = chr(c)
    return out


def write_tokenizer(d: Path):
    vocab = {c: i for i, c in enumerate(bytes_to_unicode())}
    vocab["<s>"] = 256
    vocab["</s>"] = 257
    for i, (a, b) in enumerate(MERGES):
        vocab[a + b] = 258 + i
    special = lambda i, c: {"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [special(256, "<s>"), special(257, "</s>")],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [[a, b] for a, b in MERGES]},
    }
    (d / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False))
    (d / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "add_bos_token": False, "add_eos_token": False, "model_max_length": 64,
    }))


def versions():
    import torch, transformers
    v = {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__}
    try:
        import llama_cpp
        v["llama_cpp_python"] = llama_cpp.__version__
    except ImportError:
        pass
    return v


def hf_checkpoint(spec: dict, out: Path):
    """A tiny HF checkpoint of spec['hf_model_type'] with seeded random weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = dict(spec.get("config", {}))
    cfg.setdefault("vocab_size", BYTE_VOCAB)
    cfg.setdefault("bos_token_id", 256)
    cfg.setdefault("eos_token_id", 257)
    config = AutoConfig.for_model(spec["hf_model_type"], **cfg)
    torch.manual_seed(spec.get("seed", 0))
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    scale = spec.get("init_std", 0.2)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if p.dim() == 1:  # norms and biases: around their defaults, not exactly
                p.add_(torch.randn_like(p) * 0.1)
            else:
                p.copy_(torch.randn_like(p) * scale)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    # "save": {"dtype": "bfloat16", "max_shard_size": "100KB"}: stored as real checkpoints
    # are (half precision, sharded with model.safetensors.index.json).
    save = spec.get("save", {})
    if "dtype" in save:
        model = model.to(getattr(torch, save["dtype"]))
    kwargs = {"max_shard_size": save["max_shard_size"]} if "max_shard_size" in save else {}
    model.save_pretrained(out, safe_serialization=True, **kwargs)
    write_tokenizer(out)
    return model


def hf_reference(d: Path):
    import torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    model.eval()
    cases = []
    with torch.no_grad():
        for p in PROMPTS:
            ids = torch.tensor([p])
            logits = model(ids).logits[0, -1].tolist()
            seq = list(p)
            greedy, greedy_top = [], []
            for _ in range(GREEDY_TOKENS):
                step = model(torch.tensor([seq])).logits[0, -1]
                nxt = int(step.argmax())
                greedy.append(nxt)
                greedy_top.append(top(step.tolist()))
                seq.append(nxt)
            cases.append({"prompt": p, "last_logits": logits, "greedy": greedy, "greedy_top": greedy_top})
    return {"implementation": "transformers (PyTorch, CPU, f32, no KV cache)", "versions": versions(), "cases": cases}


def llama_cpp_dir() -> Path:
    d = os.environ.get("ZOO_LLAMA_CPP_DIR")
    if not d:
        sys.exit("set ZOO_LLAMA_CPP_DIR to the vendor/llama.cpp directory of the llama-cpp-python==0.3.36 sdist")
    return Path(d)


def convert_to_gguf(hf_dir: Path, out: Path, outtype: str):
    lc = llama_cpp_dir()
    driver = f"""
import sys
sys.path.insert(0, {str(lc)!r}); sys.path.insert(0, {str(lc / 'gguf-py')!r})
import conversion.base as base
# The fixtures' byte-level tokenizer is no model llama.cpp knows by hash; it is plain GPT-2 BPE.
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"
# transformers 5 picks a tokenizer class by model type (Qwen2Tokenizer adds its own
# special tokens); the fixtures' tokenizer.json is exactly what it says, nothing more.
import transformers
transformers.AutoTokenizer.from_pretrained = staticmethod(
    lambda d, *a, **k: transformers.PreTrainedTokenizerFast.from_pretrained(d, *a, **k))
import conversion
import importlib, pkgutil
for m in pkgutil.iter_modules(conversion.__path__):
    try:
        mm = importlib.import_module("conversion." + m.name)
    except Exception:
        continue
    for v in vars(mm).values():
        if isinstance(v, type) and issubclass(v, base.TextModel) and "set_vocab" in vars(v):
            v.set_vocab = base.TextModel._set_vocab_gpt2
# llama.cpp sets token attributes by model name (one naming Phi-3 must have `</s>`, which
# the fixtures' byte-level vocabulary lacks): the fixtures carry a neutral name.
sys.argv = ["convert_hf_to_gguf.py", {str(hf_dir)!r}, "--outfile", {str(out)!r}, "--outtype", {outtype!r}, "--model-name", "zoo fixture"]
import runpy
runpy.run_path({str(lc / 'convert_hf_to_gguf.py')!r}, run_name="__main__")
"""
    subprocess.run([sys.executable, "-c", driver], check=True)


# llama.cpp's llama_ftype values (include/llama.h).
QUANT_FTYPES = {
    "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q2_k": 10, "q3_k_m": 12,
    "q4_k_m": 15, "q5_k_m": 17, "q6_k": 18, "iq4_nl": 25, "iq4_xs": 30,
}


def quantize(src: Path, out: Path, qtype: str):
    import llama_cpp
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = QUANT_FTYPES[qtype]
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), params)
    if rc != 0:
        sys.exit(f"llama_model_quantize failed ({rc}) for {src} -> {out}")


def gguf_reference(path: Path):
    import llama_cpp
    import numpy as np
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_threads=2, n_batch=64, logits_all=True, verbose=False, seed=0,
                          # f32 K/V cache and no flash attention: the reference keeps full precision
                          # where llama.cpp would otherwise round the cache to f16.
                          type_k=0, type_v=0, flash_attn=False)
    cases = []
    for p in PROMPTS:
        llm.reset()
        llm.eval(p)
        logits = np.array(llm.scores[len(p) - 1], dtype=np.float32)
        greedy, greedy_top = [], []
        step = logits
        for _ in range(GREEDY_TOKENS):
            nxt = int(step.argmax())
            greedy.append(nxt)
            greedy_top.append(top(step))
            llm.eval([nxt])
            step = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        cases.append({"prompt": p, "last_logits": logits.tolist(), "greedy": greedy, "greedy_top": greedy_top})
    return {"implementation": "llama.cpp (llama-cpp-python, CPU)", "versions": versions(), "cases": cases}


def fixtures(entries, root: Path):
    by_name = {e["name"]: e for e in entries}
    for e in entries:
        spec_path = root / e["name"] / "spec.json"
        if not spec_path.is_file():
            sys.exit(f"architecture `{e['name']}` has no fixture spec: add {spec_path} (see docs/conformance.md)")
        spec = json.loads(spec_path.read_text())
        for variant in spec["variants"]:
            vdir = root / e["name"] / variant["name"]
            print(f"fixtures: {e['name']}/{variant['name']}", flush=True)
            info = {"spec": variant, "made_by": versions()}
            if e["format"] == "safetensors":
                hf_checkpoint(variant, vdir)
                info["how"] = "transformers AutoModelForCausalLM.from_config, seeded normal weights, save_pretrained"
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    tmp = Path(tmp)
                    # The directory's name becomes the GGUF's general.name, as it does for
                    # real checkpoints ("Mistral", "Mixtral", ...).
                    hf = tmp / variant["hf_model_type"]
                    hf_checkpoint(variant, hf)
                    vdir.mkdir(parents=True, exist_ok=True)
                    q = variant["gguf_type"]
                    out = vdir / "model.gguf"
                    if q in ("f32", "f16", "q8_0"):
                        convert_to_gguf(hf, out, q)
                    else:
                        convert_to_gguf(hf, tmp / "f32.gguf", "f32")
                        quantize(tmp / "f32.gguf", out, q)
                info["how"] = f"transformers checkpoint converted by llama.cpp convert_hf_to_gguf.py, type {variant['gguf_type']}"
            (vdir / "fixture.json").write_text(json.dumps(info, indent=1) + "\n")


def refgen(entries, root: Path):
    for e in entries:
        for vdir in sorted(p for p in (root / e["name"]).iterdir() if p.is_dir()):
            print(f"refgen: {e['name']}/{vdir.name}", flush=True)
            if e["format"] == "safetensors":
                ref = hf_reference(vdir)
            else:
                ref = gguf_reference(vdir / "model.gguf")
                spec = json.loads((vdir / "fixture.json").read_text())["spec"]
                if spec["gguf_type"] == "f32":
                    # The unquantized GGUF also against transformers on the checkpoint it
                    # was converted from (rebuilt from the same seed): exact math on both
                    # sides, so llama.cpp's own approximations cannot hide a difference.
                    with tempfile.TemporaryDirectory() as tmp:
                        hf_checkpoint(spec, Path(tmp) / "hf")
                        hf = hf_reference(Path(tmp) / "hf")
                    (vdir / "reference.transformers.json").write_text(json.dumps(hf) + "\n")
            (vdir / "reference.json").write_text(json.dumps(ref) + "\n")


# Prompts long enough for the prompt kernels (at least 32 rows for every weight format,
# and a count that is no multiple of the 8-row tile), for the real models.
LONG_PROMPTS = [
    "The printing press changed how knowledge moved through Europe. Before it, books were "
    "copied by hand in monasteries, slowly and at great cost; afterwards, a single workshop "
    "could produce hundreds of identical copies in a few weeks. Historians still argue about",
    "def merge_sorted(a, b):\n    \"\"\"Merge two sorted lists into one sorted list.\"\"\"\n"
    "    out = []\n    i = j = 0\n    while i < len(a) and j < len(b):\n"
    "        if a[i] <= b[j]:\n            out.append(a[i])\n            i += 1\n",
]
LONG_TOKENS = 32


def real_models(models, out: Path):
    """llama.cpp with an f32 KV cache on each real GGUF: the greedy continuation of every
    prompt of its f16-KV reference (../shared/reference, kept as tests/data/reference/
    f16-kv) and of LONG_PROMPTS, with llama.cpp's top GREEDY_TOP logits at every step.
    Prompt ids as llama.cpp builds them (BOS where the GGUF asks); one batch per prompt,
    then one token per step, as zoo's tests feed them."""
    import llama_cpp
    import numpy as np
    out.mkdir(parents=True, exist_ok=True)
    for name, path, f16_ref in models:
        print(f"real model: {name}", flush=True)
        # type_k/type_v 0: GGML_TYPE_F32 (llama.cpp's default is f16).
        llm = llama_cpp.Llama(model_path=path, n_ctx=256, n_threads=2, n_batch=256, logits_all=True,
                              verbose=False, seed=0, type_k=0, type_v=0, flash_attn=False)
        add_bos = llm.metadata.get("tokenizer.ggml.add_bos_token", "false") == "true"
        short = json.loads(Path(f16_ref).read_text())["generate"]
        cases = []
        for text in [c["prompt"] for c in short] + LONG_PROMPTS:
            ids = llm.tokenize(text.encode(), add_bos=True, special=False)
            llm.reset()
            llm.eval(ids)
            scores = np.array(llm.scores[len(ids) - 1])
            nxt, cont, tops = int(scores.argmax()), [], []
            for _ in range(LONG_TOKENS):
                if nxt == llm.token_eos():
                    break
                cont.append(nxt)
                tops.append(top(scores))
                llm.eval([nxt])
                scores = np.array(llm.scores[llm.n_tokens - 1])
                nxt = int(scores.argmax())
            # llama.cpp against itself: the same tokens as one batch. What moves is the
            # reference's own noise, which the real-model rule is measured on.
            llm.reset()
            llm.eval(ids + cont)
            diff, flips = 0.0, []
            for step, t in enumerate(tops):
                scores = np.array(llm.scores[len(ids) - 1 + step])
                diff = max(diff, max(abs(float(scores[i]) - l) for i, l in t))
                a = int(scores.argmax())
                if a != t[0][0]:
                    theirs = [l for i, l in t if i == a]
                    flips.append([step, t[0][1] - (theirs[0] if theirs else t[-1][1])])
            cases.append({
                "prompt": text,
                "prompt_ids": ids,
                "continuation_ids": cont,
                "continuation_text": llm.detokenize(cont).decode("utf-8", errors="replace"),
                "greedy_top": tops,
                "one_batch": {"max_top_diff": diff, "flips": flips},
            })
        ref = {
            "model": name,
            "made_by": versions(),
            "add_bos_token": add_bos,
            "note": "cargo xtask refgen --real-models: llama.cpp (f32 KV cache, one batch for the "
                    "prompt, then one token per step), greedy continuation stopped at eos or "
                    f"{LONG_TOKENS} tokens; greedy_top: llama.cpp's top {GREEDY_TOP} logits at each "
                    "step, [id, logit], largest first. one_batch: llama.cpp against itself, the "
                    "prompt and continuation as one batch: max |logit difference| over the top "
                    "logits, and the steps whose argmax differs with the gap there.",
            "tokenize": [],
            "generate": cases,
        }
        (out / f"{name}.json").write_text(json.dumps(ref, indent=1) + "\n")


def real_safetensors(models, out: Path):
    """bf16 safetensors checkpoints of the real GGUFs, made by transformers' own GGUF
    loader (from_pretrained(gguf_file=...), then save_pretrained, in shards of at most
    200 MB), with transformers' greedy continuation of LONG_PROMPTS (computed in f32
    from the bf16 weights, no KV cache) and its bf16 decode speed (CPU, KV cache)."""
    import time
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    torch.set_num_threads(2)
    for name, path in models:
        gguf = Path(path)
        d = out / name
        print(f"real safetensors: {name}", flush=True)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        if d.exists():
            shutil.rmtree(d)
        # The GGUF loader dequantizes every weight but marks the model as quantized,
        # which save_pretrained refuses: the weights are plain tensors, so unmark it.
        model.hf_quantizer = None
        model.is_quantized = False
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(d, max_shard_size="200MB")
        tok.save_pretrained(d)
        ref = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        cases = []
        with torch.no_grad():
            for text in LONG_PROMPTS:
                ids = tok(text)["input_ids"]
                seq, cont, tops = list(ids), [], []
                for _ in range(16):
                    step = ref(torch.tensor([seq])).logits[0, -1]
                    nxt = int(step.argmax())
                    cont.append(nxt)
                    tops.append(top(step.tolist()))
                    seq.append(nxt)
                cases.append({"prompt": text, "prompt_ids": ids, "continuation_ids": cont, "greedy_top": tops})
        bf = AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16).eval()
        ids = torch.tensor([tok(LONG_PROMPTS[0])["input_ids"]])
        with torch.no_grad():
            bf.generate(ids, max_new_tokens=4, do_sample=False)
            t0 = time.perf_counter()
            g = bf.generate(ids, max_new_tokens=64, min_new_tokens=64, do_sample=False)
            dt = time.perf_counter() - t0
        made = g.shape[1] - ids.shape[1]
        rec = {"model": name, "made_by": versions(), "note": "refgen real-safetensors: transformers "
               "(f32 compute from the bf16 checkpoint, no KV cache), 16 greedy tokens with top logits",
               "transformers_bf16_decode_tok_s": made / dt, "cases": cases}
        (out / f"{name}.reference.json").write_text(json.dumps(rec) + "\n")
        print(f"{name}: {made / dt:.1f} tok/s (transformers bf16, 2 threads, prompt + 64 tokens)", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "real-safetensors":
        # real-safetensors OUT_DIR NAME=GGUF...
        real_safetensors([a.split("=", 1) for a in sys.argv[3:]], Path(sys.argv[2]))
        sys.exit(0)
    if sys.argv[1] == "real-models":
        # real-models OUT_DIR NAME=GGUF=F16_KV_REFERENCE...
        real_models([a.split("=", 2) for a in sys.argv[3:]], Path(sys.argv[2]))
        sys.exit(0)
    task, entries_json, root = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    entries = json.loads(Path(entries_json).read_text())
    only = sys.argv[4:]
    if only:
        entries = [e for e in entries if e["name"] in only]
    {"fixtures": fixtures, "refgen": refgen}[task](entries, root)
