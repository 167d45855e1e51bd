#!/usr/bin/env bash
# The GPU proof of issue 16 (docs/gpu.md), in one call on a machine with an NVIDIA GPU,
# from the repository root, over binaries that `cargo xtask gpu-build` made elsewhere
# (target/gpu-check/bin: `zoo` and the conformance suite, both with --features cuda,
# gzipped):
#
#   1. the conformance suite on the device for every GGUF entry (ZOO_DEVICE);
#   2. `zoo run --device $DEVICE` greedy on each real model found in $ZOO_GPU_MODELS
#      (default target/gpu-check/models), set beside llama.cpp's recorded continuation
#      and zoo's own on the CPU;
#   3. `zoo bench --device $DEVICE -p 128 -n 128` on each of them.
#
# Figures go to $OUT (the device tool's folder), else target/gpu-check-out. On a
# machine without a GPU, `ZOO_GPU_CHECK_DEVICE=cpu` runs the same steps on the CPU
# (`cargo xtask gpu-check --dry-run`), with ZOO_GPU_CHECK_QUICK=1 for short benches.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE=${ZOO_GPU_CHECK_DEVICE:-cuda}
BIN=${ZOO_GPU_BIN:-target/gpu-check/bin}
MODELS=${ZOO_GPU_MODELS:-target/gpu-check/models}
OUT=${OUT:-target/gpu-check-out}
mkdir -p "$OUT"
# gpu-build leaves the binaries gzipped (they travel within the 64 MiB of a device call).
if [ ! -x "$BIN/zoo" ] && [ -f "$BIN/zoo.gz" ]; then
  run_bin=$(mktemp -d)
  for b in zoo conformance; do gzip -dc "$BIN/$b.gz" >"$run_bin/$b" && chmod +x "$run_bin/$b"; done
  BIN=$run_bin
fi
SUMMARY="$OUT/summary.md"
: >"$SUMMARY"
say() { echo "$*" | tee -a "$SUMMARY"; }
status=0

say "# zoo gpu-check on \`$DEVICE\` ($(date -u +%FT%TZ))"
if [ "$DEVICE" != cpu ]; then
  # The CUDA libraries the binary links (cuBLAS, cuRAND, NVRTC, the runtime): the
  # toolkit's, else the machine's Python packages (nvidia-*), on the loader's path.
  libs=$(python3 - <<'EOF' 2>/dev/null
import glob, os
dirs = set()
try:
    import nvidia
    for d in nvidia.__path__:
        for p in glob.glob(d + "/**/lib*.so*", recursive=True):
            dirs.add(os.path.dirname(p))
except ImportError:
    pass
print(":".join(sorted(dirs)))
EOF
  )
  export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${libs}:${LD_LIBRARY_PATH:-}"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
    | tee "$OUT/gpu.txt" | sed 's/^/GPU: /' | tee -a "$SUMMARY"
  if ldd "$BIN/zoo" | grep -q 'not found'; then
    say "missing libraries:"; ldd "$BIN/zoo" | grep 'not found' | tee -a "$SUMMARY"
    exit 1
  fi
fi
"$BIN/zoo" --version | tee -a "$SUMMARY"

# 1. Conformance: every GGUF entry (the registry's `quantized-*` names) on the device.
say "## conformance (GGUF entries) on $DEVICE"
ZOO_DEVICE=$DEVICE ZOO_TESTS_DIR="$PWD/tests" INSTA_UPDATE=no \
  "$BIN/conformance" quantized- --test-threads 1 >"$OUT/conformance.log" 2>&1
rc=$?
grep -E '^test |max \|logit|near tie|batched forward off|test result' "$OUT/conformance.log" \
  >"$OUT/conformance-figures.txt"
grep -E 'test result' "$OUT/conformance.log" | tee -a "$SUMMARY"
[ $rc -eq 0 ] || { say "conformance FAILED (rc $rc): see conformance.log"; status=1; }

# 2 and 3. The real models, where they were carried.
say "## real models on $DEVICE"
declare -A FILE=(
  [smollm2-135m-instruct-q4_1]=SmolLM2-135M-Instruct.Q4_1.gguf
  [gemma3-270m-q4_k_m]=gemma-3-270m-q4_k_m.gguf
  [qwen2.5-coder-0.5b-instruct-q4_k_m]=qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
)
if [ "${ZOO_GPU_CHECK_QUICK:-0}" = 1 ]; then BENCH=(-p 16 -n 8 -r 1); else BENCH=(-p 128 -n 128 -r 3); fi
for ref in tests/data/reference/*.json; do
  name=$(basename "$ref" .json)
  model="$MODELS/${FILE[$name]:-none}"
  if [ ! -f "$model" ]; then
    say "- $name: not here ($model); skipped"
    continue
  fi
  # Greedy continuations, free-running, set beside llama.cpp's recording and beside
  # zoo's own on the CPU (free-running greedy parts from llama.cpp at near ties even
  # on the CPU: the tests compare teacher-forced; here the figures are reported).
  python3 - "$ref" "$model" "$BIN/zoo" "$DEVICE" "$OUT/run-$name.json" <<'EOF' | tee -a "$SUMMARY"
import json, subprocess, sys
ref, model, zoo, device, out = sys.argv[1:]
def run(dev, c):
    p = subprocess.run([zoo, "run", "--device", dev, "--model", model, "--prompt", c["prompt"],
                        "-n", str(len(c["continuation_ids"])), "--temperature", "0"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr)
        return None, p.stderr.strip().splitlines()[-1:]
    return p.stdout[len(c["prompt"]):].rstrip("\n"), p.stderr.strip().splitlines()[-1:]
def common(a, b):
    n = 0
    while a is not None and n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n
cases, ok = [], True
for c in json.load(open(ref))["generate"]:
    ours, speed = run(device, c)
    cpu = ours if device == "cpu" else run("cpu", c)[0]
    ok &= ours is not None
    cases.append({"prompt": c["prompt"], "ours": ours, "cpu": cpu, "reference": c["continuation_text"],
                  "chars_as_llama_cpp": common(ours, c["continuation_text"]),
                  "chars_as_cpu": common(ours, cpu or ""), "chars": len(c["continuation_text"]),
                  "speed": speed})
json.dump({"model": model, "device": device, "cases": cases}, open(out, "w"), indent=1)
print(f"- {ref.split('/')[-1][:-5]}: zoo run on {device}, characters in common with llama.cpp's / zoo-on-CPU's greedy text: "
      + ", ".join(f"{c['chars_as_llama_cpp']} / {c['chars_as_cpu']} of {c['chars']}" for c in cases)
      + ("" if ok else " (a run FAILED; see run-*.json)"))
sys.exit(0 if ok else 1)
EOF
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
  if "$BIN/zoo" bench --device "$DEVICE" --model "$model" "${BENCH[@]}" --json \
    >"$OUT/bench-$name.json" 2>"$OUT/bench-$name.log"; then
    python3 -c "import json,sys; b=json.load(open(sys.argv[1])); print(f\"- {sys.argv[2]}: bench on {b.get('device')}: pp{b['pp']['tokens']} {b['pp']['tok_s']:.1f} tok/s, tg{b['tg']['tokens']} {b['tg']['tok_s']:.1f} tok/s, load {b['load_s']:.2f} s\")" \
      "$OUT/bench-$name.json" "$name" | tee -a "$SUMMARY"
  else
    say "- $name: bench FAILED (see bench-$name.log)"; status=1
  fi
done
say "status: $status"
exit $status
