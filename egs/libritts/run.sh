#!/usr/bin/env bash
# VoxLM on LibriTTS / LibriTTS-R (24 kHz read English, 2,456 speakers): the same stages as
# egs/synth_en, shared from recipes/stages.sh; only stage 0 (and the optional download) is local/.
#   bash egs/libritts/run.sh --libritts_root /data/LibriTTS_R [--ngpu 8] [--stage N] [--stop_stage M]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
. ../../recipes/setup.sh          # venv + install, idempotent; exports VOXLM_PY
. ../../recipes/utils.sh          # log, stage helpers
. ../../recipes/stages.sh         # stages 1-7, run_stages

stage=0
stop_stage=7
nj=8
libritts_root=""    # the corpus: <root>/<split>/<speaker>/<chapter>/<utt>.wav + <utt>.normalized.txt
train_sets="train-clean-100 train-clean-360"
dev_set=dev-clean
test_set=test-clean
max_seconds=20      # longer training utterances are left out (LibriTTS tops out near 35 s)
download_dir=downloads  # stage -1 (only with --stage -1): fetch + unpack from openslr.org
corpus=LibriTTS_R   # stage -1: LibriTTS_R (SLR141) or LibriTTS (SLR60)
data=data
exp=exp
tokenizer_conf=conf/tokenizer.yaml  # each *_conf has a *_tiny.yaml twin for smoke runs
llm_conf=conf/llm.yaml
llm_align_conf=none                 # the text-only warm-up helps tiny data; LibriTTS has enough
flow_conf=conf/flow.yaml
vocoder_conf=conf/vocoder.yaml
llm_report_utts=200
vocoder_report_utts=100
flow_report_utts=50
speaker_steps=20000
tokenizer_steps=""  # a phase's training steps (empty: its config's trainer.max_steps);
llm_steps=""        # likewise llm_steps, flow_steps, vocoder_steps
flow_steps=""
vocoder_steps=""
n_candidates=4
eval_per_speaker=5
ngpu=0              # GPUs per node (0: the configs decide)
num_nodes=1         # nodes; > 1 needs --launcher (e.g. "srun" inside an allocation)
launcher=""
mel_preset=24k      # the 24 kHz mel definition (tts/mel.py); flow and vocoder configs agree
parallel=false      # true: independent stages side by side (one machine, no launcher; recipes/stages.sh)
init_model=""       # a packaged model dir to fine-tune on this data (its tokenizer, its weights; README)
recipe_options="stage stop_stage nj libritts_root train_sets dev_set test_set max_seconds download_dir corpus
  data exp tokenizer_conf llm_conf llm_align_conf flow_conf vocoder_conf llm_report_utts vocoder_report_utts
  flow_report_utts speaker_steps tokenizer_steps llm_steps flow_steps vocoder_steps n_candidates eval_per_speaker
  ngpu num_nodes launcher parallel init_model"
. ../../recipes/parse_options.sh

if stage_enabled -1; then
  log "stage -1: download $corpus ($train_sets $dev_set $test_set) -> $download_dir"
  local/download.sh "$download_dir" "$corpus" $train_sets "$dev_set" "$test_set"
  libritts_root=$download_dir/$corpus
fi

stage0_desc="LibriTTS data dirs from ${libritts_root:-<--libritts_root>}"
stage0() {
  if [ -z "$libritts_root" ]; then
    echo "$0: give --libritts_root /path/to/LibriTTS_R (or --stage -1 to download it)" >&2
    return 1
  fi
  # shellcheck disable=SC2086
  py local/prepare_libritts.py --root "$libritts_root" --data "$data" --nj "$nj" \
    --train $train_sets --dev "$dev_set" --test "$test_set" --max-seconds "$max_seconds"
  py -m tts.datadir "$data/train" "$data/dev" "$data/test"
}
stage0_summary() { cat "$data/corpus_card.json"; }

run_stages
