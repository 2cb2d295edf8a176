#!/usr/bin/env bash
# VoxLM toy recipe: a multi-speaker English corpus spoken by Debian's
# synthesizers, then every part of the chain trained on it.
#   bash egs/synth_en/run.sh [--stage N] [--stop_stage M] [--nj J] [--name value ...]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
. ../../recipes/setup.sh          # venv + install, idempotent; exports VOXLM_PY
. ../../recipes/utils.sh          # log, stage helpers

stage=0
stop_stage=7
nj=2
train_hours=3.0     # training audio to synthesize (the corpus card reports the real figure)
data=data
exp=exp
recipe_options="stage stop_stage nj train_hours data exp"
. ../../recipes/parse_options.sh

py() { "$VOXLM_PY" "$@"; }

stage0() {
  py local/prepare_corpus.py --data "$data" --nj "$nj" --train-hours "$train_hours"
  py -m tts.datadir "$data/train" "$data/dev" "$data/test"
  py local/corpus_card.py --data "$data" --out "$data/corpus_card.json"
}
if stage_enabled 0; then
  log "stage 0: toy corpus -> $data/{train,dev,test}"
  run_once "$data/.stage0.done" stage0
  cat "$data/corpus_card.json"
fi

# @@STAGE-1-2 (tokenizer): train on $data/train, extract tokens for every split

# @@STAGE-3 (llm)

# @@STAGE-4 (flow)

# @@STAGE-5 (vocoder)

# @@STAGE-6-7 (package, synthesize + evaluate)

log "done (stages $stage..$stop_stage)"
