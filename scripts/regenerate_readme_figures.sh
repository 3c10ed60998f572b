#!/usr/bin/env bash
# Reruns every command behind the measured tables of the docs (docs/training.md, evaluation.md,
# models.md, benchmarks.md, performance.md) on the current code, and writes
# their outputs plus one summary (the numbers, each with its command, the date and the device) to
# $OUT/README_FIGURES.md. It takes hours on a CPU (the K = 5000 evaluations and the priors x guides
# benchmark dominate); it is not a test. Copy the numbers into those pages by hand, with the date and
# device printed in the summary.
#
#   bash scripts/regenerate_readme_figures.sh                 # everything, into runs/readme-figures
#   OUT=/tmp/figs bash scripts/regenerate_readme_figures.sh default cvae   # some parts only
#
# Parts: default (the default run and its K = 5000 evaluation), priors_guides (standard/VampPrior x
# diag/IAF benchmark), cvae, m2 (Kingma et al.'s M2 with 100 labels, as `python -m pyro_vae.reproduce`
# runs it), performance (the training-step and evaluation benchmarks of docs/performance.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-runs/readme-figures}
PARTS=("$@")
[ ${#PARTS[@]} -eq 0 ] && PARTS=(default priors_guides cvae m2 performance)
mkdir -p "$OUT"
LOG="$OUT/commands.log"

run() {  # run "description" command...: log the command, its start, end and exit status
  echo "== $(date -u '+%Y-%m-%d %H:%M:%S UTC') $*" | tee -a "$LOG"
  local start=$SECONDS
  "$@" 2>&1 | tee -a "$OUT/output.log"
  echo "== done in $(( (SECONDS - start) / 60 )) min: $*" | tee -a "$LOG"
}

for part in "${PARTS[@]}"; do
  case "$part" in
    default)
      # docs/training.md and evaluation.md: the default run (30 epochs) and its test log p(x) with K = 5000
      run "$PY" -m pyro_vae.fit --out "$OUT/mnist" --overwrite
      run "$PY" -m pyro_vae.evaluate "$OUT/mnist" --k 5000 --no-progress ;;
    priors_guides)
      # docs/benchmarks.md: standard vs VampPrior, diagonal vs IAF
      run "$PY" benchmarks/priors_guides.py --epochs 20 --threads 1 \
        --runs "$OUT/priors_guides_runs" --out "$OUT/priors_guides.json" ;;
    cvae)
      # docs/models.md, the CVAE row
      run "$PY" -m pyro_vae.fit --model cvae --prior learned --epochs 20 --out "$OUT/cvae" --overwrite ;;
    m2)
      # docs/models.md and docs/reproduce.md: M2 with 100 labels, Pyro's tutorial settings, 50 epochs at most
      run "$PY" -m pyro_vae.reproduce kingma2014-m2-100 --budget-minutes 60 --out "$OUT/m2-100" --overwrite ;;
    performance)
      # docs/performance.md: each training row, then the evaluation
      for size_steps in "default 20" "tiny 50"; do
        set -- $size_steps
        for elbo in trace meanfield; do
          for jit in "" "--jit"; do
            run "$PY" benchmarks/train_speed.py --size "$1" --steps "$2" --blocks 15 --elbo "$elbo" $jit \
              --out "$OUT/performance/train_$1_$elbo${jit:+_jit}.json"
          done
        done
      done
      run "$PY" benchmarks/eval_speed.py --k 1000 --images 500 --out "$OUT/performance/eval_speed.json" ;;
    *) echo "unknown part $part; choose from: default priors_guides cvae m2 performance" >&2; exit 2 ;;
  esac
done

"$PY" - "$OUT" <<'PYEOF'
"""Collect the numbers the docs quote from the files the commands wrote."""
import json, os, platform, subprocess, sys
from datetime import datetime, timezone
from pathlib import Path

import torch

out = Path(sys.argv[1])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
device = (torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{os.cpu_count()}-core {cpu}, no GPU")
lines = [f"# Docs figures, regenerated {datetime.now(timezone.utc):%Y-%m-%d} on {device}",
         f"torch {torch.__version__}; commands and timings in commands.log", ""]

def fmt(value, spec=".2f"):
    return "n/a" if value is None else format(value, spec)

def load(path):
    path = out / path
    return json.loads(path.read_text()) if path.is_file() else None

for run, command in [("mnist", "python -m pyro_vae.fit --out runs/mnist"),
                     ("cvae", "python -m pyro_vae.fit --model cvae --prior learned --epochs 20 --out runs/cvae"),
                     ("m2-100", "python -m pyro_vae.reproduce kingma2014-m2-100 --budget-minutes 60 --out runs/m2-100")]:
    summary = load(f"{run}/summary.json")
    if summary is None:
        continue
    final = summary["final"]
    text = (f"- `{command}`: test ELBO {final['test_elbo']:.2f} (validation {final['valid_elbo']:.2f}, train "
            f"{final['train_elbo']:.2f}; reconstruction {final['test_recon']:.2f}, KL {final['test_kl']:.2f}); "
            f"{summary['epochs']} epochs in {summary['seconds'] / 60:.1f} min on {summary['device']}")
    if "test_accuracy" in final:
        text += f"; test error of q(y|x) {1 - final['test_accuracy']:.2%}"
    lines.append(text)
    evaluation = load(f"{run}/eval.json")
    if evaluation and "test" in evaluation:
        e = evaluation["test"]
        lines.append(f"- `python -m pyro_vae.evaluate runs/{run} --k {e['k']}`: test log p(x) "
                     f"{fmt(e.get('log_px_mean'))} ± {fmt(e.get('log_px_stderr'))}; ELBO {fmt(e.get('elbo_mean'))}; "
                     f"active units {e.get('active_units')}; k-hat > 0.7: {fmt(e.get('khat_share_above_0.7'), '.0%')}")
for name in ["priors_guides.json", *sorted(str(p.relative_to(out)) for p in out.glob("performance/*.json"))]:
    data = load(name)
    if data is not None:
        lines.append(f"- `{name}`: see the file; {json.dumps(data)[:400]}...")
(out / "README_FIGURES.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PYEOF
