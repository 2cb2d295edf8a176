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
dev_per_spk=5       # dev utterances per training speaker
test_per_spk=15     # test utterances per held-out speaker
data=data
exp=exp
tokenizer_conf=conf/tokenizer.yaml  # each *_conf has a *_tiny.yaml twin for smoke runs
llm_conf=conf/llm.yaml
llm_align_conf=conf/llm_align.yaml  # LLM warm-up on text-only synthetic tokens; "none" skips it
flow_conf=conf/flow_small.yaml
vocoder_conf=conf/vocoder.yaml
llm_report_utts=100      # dev utterances the stage-3 report generates
vocoder_report_utts=60   # dev utterances the stage-5 report vocodes
flow_report_utts=30      # dev utterances the stage-4 report resynthesises
speaker_steps=1500  # speaker-verifier training steps
n_candidates=4      # best-of-N width at evaluation
eval_per_speaker=5  # zero-shot targets per test speaker
recipe_options="stage stop_stage nj train_hours dev_per_spk test_per_spk data exp tokenizer_conf llm_conf llm_align_conf flow_conf vocoder_conf
  llm_report_utts vocoder_report_utts flow_report_utts speaker_steps n_candidates eval_per_speaker"
. ../../recipes/parse_options.sh

py() { "$VOXLM_PY" "$@"; }

stage0() {
  py local/prepare_corpus.py --data "$data" --nj "$nj" --train-hours "$train_hours" \
    --dev-per-spk "$dev_per_spk" --test-per-spk "$test_per_spk"
  py -m tts.datadir "$data/train" "$data/dev" "$data/test"
  py local/corpus_card.py --data "$data" --out "$data/corpus_card.json"
}
if stage_enabled 0; then
  log "stage 0: toy corpus -> $data/{train,dev,test}"
  run_once "$data/.stage0.done" stage0
  cat "$data/corpus_card.json"
fi

stage1() {
  OMP_WAIT_POLICY=PASSIVE py -m tokenizer.train --config "$tokenizer_conf" \
    --train "$data/train" --dev "$data/dev" --exp "$exp/tokenizer"
}
stage2() {
  py -m tokenizer.extract --model "$exp/tokenizer/model" --nj "$nj" \
    --data "$data/train" "$data/dev" "$data/test"
  py -m tokenizer.report --model "$exp/tokenizer/model" --data "$data/dev" \
    --out "$exp/tokenizer/report.json"
}
if stage_enabled 1; then
  log "stage 1: tokenizer (ASR encoder + FSQ inside, CTC) on $data/train -> $exp/tokenizer/model"
  run_once "$exp/tokenizer/.stage1.done" stage1
fi
if stage_enabled 2; then
  log "stage 2: speech tokens -> $data/{train,dev,test}/tokens; scores -> $exp/tokenizer/report.json"
  run_once "$exp/tokenizer/.stage2.done" stage2
fi

# stage 3: the text-to-speech-token LLM
stage3() {
  local init=()
  if [ "$llm_align_conf" != none ]; then  # alignment warm-up on text-only synthetic tokens
    OMP_WAIT_POLICY=PASSIVE py -m tts.llm_train --config "$llm_align_conf" --synthetic-tokens \
      --train "$data/train" --dev "$data/dev" --exp "$exp/llm_align" --tokenizer "$exp/tokenizer/model"
    init=(--init-from "$exp/llm_align/model")
  fi
  OMP_WAIT_POLICY=PASSIVE py -m tts.llm_train --config "$llm_conf" "${init[@]}" \
    --train "$data/train" --dev "$data/dev" --exp "$exp/llm" --tokenizer "$exp/tokenizer/model"
  py -m tts.llm_report --model "$exp/llm/model" --tokenizer "$exp/tokenizer/model" \
    --data "$data/dev" --max-utts "$llm_report_utts" --out "$exp/llm/report.json"
}
if stage_enabled 3; then
  log "stage 3: llm -> $exp/llm/{model,report.json}"
  run_once "$exp/llm/.stage3.done" stage3
fi

# stage 4: flow matching, speech tokens -> mel, trained on ground-truth tokens of $data/train.
# The report resynthesises dev tokens with a same-speaker prompt (mel L1, WER, SIM; the
# trained vocoder when $exp/vocoder/model exists, else Griffin-Lim).
stage4() {
  py -m flow.train --config "$flow_conf" --train "$data/train" --dev "$data/dev" \
    --exp "$exp/flow" --tokenizer "$exp/tokenizer/model" --threads 1
}
stage4_report() {
  py -m flow.report --model "$exp/flow/model" --data "$data/dev" --out "$exp/flow/report" \
    --vocoder "$exp/vocoder/model" --steps 10 --chunk 50 --threads 1 \
    --max-utts "$flow_report_utts"
}
if stage_enabled 4; then
  log "stage 4: flow matching -> $exp/flow"
  run_once "$exp/flow/.stage4.done" stage4
  run_once "$exp/flow/report/.done" stage4_report
  cat "$exp/flow/report/report.md"
fi

# @@STAGE-5 (vocoder)
stage5() {
  OMP_WAIT_POLICY=PASSIVE py -m vocoder.train --config "$vocoder_conf" \
    --train "$data/train" --dev "$data/dev" --exp "$exp/vocoder"
  py -m vocoder.report --model "$exp/vocoder/model" --data "$data/dev" \
    --max-utts "$vocoder_report_utts" --out "$exp/vocoder/report.json"
}
if stage_enabled 5; then
  log "stage 5: vocoder -> $exp/vocoder/{model,report.json}"
  run_once "$exp/vocoder/.stage5.done" stage5
fi

# stage 6: VoxLM's own speaker verifier, then one self-contained model directory
stage6() {
  OMP_WAIT_POLICY=PASSIVE py -m tts.speaker_train --train "$data/train" --dev "$data/test" \
    --exp "$exp/speaker" --max-steps "$speaker_steps"
  py -m tts.model_dir --tokenizer "$exp/tokenizer/model" --llm "$exp/llm/model" --flow "$exp/flow/model" \
    --vocoder "$exp/vocoder/model" --speaker "$exp/speaker/model" --out "$exp/model" \
    --examples "$data/test"  # one demo example per held-out speaker
}
if stage_enabled 6; then
  log "stage 6: speaker verifier -> $exp/speaker; package -> $exp/model"
  run_once "$exp/model/.stage6.done" stage6
fi

# stage 7: zero-shot clones of the held-out test speakers, judged (WER, SIM, RTF)
stage7() {
  py -m tts.cli eval --model "$exp/model" --data "$data/test" --per-speaker "$eval_per_speaker" \
    --n-candidates "$n_candidates" --out "$exp/eval"
}
if stage_enabled 7; then
  log "stage 7: synthesize + evaluate -> $exp/eval"
  run_once "$exp/eval/.stage7.done" stage7
  cat "$exp/eval/table.md"
fi

log "done (stages $stage..$stop_stage)"
