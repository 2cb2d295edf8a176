#!/usr/bin/env bash
# VoxLM toy recipe: a multi-speaker English corpus spoken by Debian's
# synthesizers, then every part of the chain trained on it.
#   bash egs/synth_en/run.sh [--stage N] [--stop_stage M] [--nj J] [--name value ...]
# Stages 1-7 are the shared ones in recipes/stages.sh; stage 0 (the corpus) is local/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
. ../../recipes/setup.sh          # venv + install, idempotent; exports VOXLM_PY
. ../../recipes/utils.sh          # log, stage helpers
. ../../recipes/stages.sh         # stages 1-7, run_stages

stage=0
stop_stage=7
nj=2
train_hours=3.0     # training audio to synthesize (the corpus card reports the real figure)
dev_per_spk=5       # dev utterances per training speaker
test_per_spk=15     # test utterances per held-out speaker
timbre_per_spk=30   # utterances per timbre speaker ($data/timbre: 10 voices of other languages x 4 looks,
                    # 1.3 h the flow's second phase also trains on; 0: none)
data=data
exp=exp
tokenizer_conf=conf/tokenizer.yaml  # each *_conf has a *_tiny.yaml twin for smoke runs
tokenizer_ft_conf=none  # or conf/tokenizer_ft.yaml: a SpecAugment phase from tokenizer_conf's model (it helped 1,000 codes, not 240)
llm_conf=conf/llm.yaml
llm_align_conf=none  # or conf/llm_align.yaml: an LLM warm-up on text-only synthetic tokens (the interleaved layout needs none)
flow_conf=conf/flow_small.yaml
flow_ft_conf=conf/flow_ft.yaml  # a second flow phase from flow_conf's model, on train + $data/timbre (none: skip it)
flow_ft_threads=2   # it runs alone by then: 2 threads ~1.35x one here (120 steps: 88 s against 112 s)
flow_procs=2        # ...or, when > 1, in that many one-thread processes (DDP, batches split): ~1.17x two threads
vocoder_conf=conf/vocoder.yaml
vocoder_gan_conf=conf/vocoder_gan.yaml  # the GAN phase, started from vocoder_conf's generator (none: skip it)
llm_report_utts=100      # dev utterances the stage-3 report generates
vocoder_report_utts=210  # dev utterances the stage-5 report vocodes: all (60 are too few to tell it from Griffin-Lim: RESULTS.md, stop 32)
flow_report_utts=210     # dev utterances the stage-4 report resynthesises: all (30 are too few for its 1.3x bar: RESULTS.md, stop 31)
speaker_steps=1500  # speaker-verifier training steps
tokenizer_steps=""  # a phase's training steps (empty: its config's trainer.max_steps); also llm_steps,
llm_steps=""        # flow_steps, flow_ft_steps, vocoder_steps, vocoder_gan_steps. conf/fast.sh uses them
flow_steps=""
flow_ft_steps=""
vocoder_steps=""
vocoder_gan_steps=""
n_candidates=8      # best-of-N width at evaluation (stage 7 scores N=1 and N=n_candidates)
eval_per_speaker=14 # zero-shot targets per test speaker: all but the prompt (126 clones, ~10 min; 45 left
                    # one draw's N=1 vs N=8 gap at +-0.03, RESULTS.md 2026-12-05 stop 29)
ngpu=0              # GPUs per node for training (0: the configs decide; CPU here)
num_nodes=1         # nodes; > 1 needs --launcher
launcher=""         # e.g. "srun": starts every rank of trainers and extraction
mel_preset=16k-w40  # the shared mel definition (tts/mel.py) the flow and vocoder configs use: 40 ms window, 50 fps
onnx_export=true    # stage 6 also exports every network to $exp/model/onnx (voxlm export onnx)
parallel=true       # independent stages side by side, one process each (recipes/stages.sh, run_stages)
init_model=""       # a packaged model dir to fine-tune on this data (its tokenizer, its weights; README)
recipe_options="stage stop_stage nj train_hours dev_per_spk test_per_spk timbre_per_spk data exp tokenizer_conf tokenizer_ft_conf llm_conf llm_align_conf flow_conf flow_ft_conf flow_ft_threads flow_procs vocoder_conf vocoder_gan_conf
  llm_report_utts vocoder_report_utts flow_report_utts speaker_steps tokenizer_steps llm_steps flow_steps flow_ft_steps
  vocoder_steps vocoder_gan_steps n_candidates eval_per_speaker ngpu num_nodes launcher onnx_export parallel init_model"
. ../../recipes/parse_options.sh
# more voices for the flow (stages.sh): the timbre split, when stage 0 makes it or made it
flow_extra_data=""
if [ "$timbre_per_spk" -gt 0 ] && { [ "$stage" -le 0 ] || [ -d "$data/timbre" ]; }; then
  flow_extra_data="$data/timbre"
fi
if [ -z "$flow_extra_data" ]; then flow_ft_conf=none; fi  # the second phase is for the extra voices

stage0_desc="toy corpus"
stage0() {
  py local/prepare_corpus.py --data "$data" --nj "$nj" --train-hours "$train_hours" \
    --dev-per-spk "$dev_per_spk" --test-per-spk "$test_per_spk" --timbre-per-spk "$timbre_per_spk"
  # shellcheck disable=SC2086
  py -m tts.datadir "$data/train" "$data/dev" "$data/test" $flow_extra_data
  py local/corpus_card.py --data "$data" --out "$data/corpus_card.json"
}
stage0_summary() { cat "$data/corpus_card.json"; }

run_stages
