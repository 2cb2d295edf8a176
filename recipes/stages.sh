# Stages 1-7 shared by every VoxLM recipe; stage 0 (data prep) is the corpus's own.
#   . ../../recipes/stages.sh     (after utils.sh; it only defines functions)
# The recipe sets its variables, parses its options, defines
#   stage0          corpus data prep -> $data/{train,dev,test}, validated
#   stage0_summary  optional: printed after stage 0 (e.g. a corpus card)
# and calls `run_stages`. Variables the stages read (every recipe sets them):
#   stage stop_stage nj data exp stage0_desc mel_preset ngpu num_nodes launcher
#   tokenizer_conf llm_conf llm_align_conf flow_conf vocoder_conf
#   vocoder_gan_conf (optional, default none: a GAN phase started from stage 5's generator)
#   tokenizer_ft_conf (optional, default none: a fine-tuning phase started from stage 1's model)
#   llm_report_utts vocoder_report_utts flow_report_utts speaker_steps n_candidates eval_per_speaker
#   flow_extra_data (optional, default empty): more data dirs the flow also trains on (speech whose
#     transcripts are unusable still gives it timbres: it needs only tokens and mel); stage 2
#     extracts their tokens. With flow_ft_conf they join in its phase only.
#   flow_ft_conf (optional, default none): a second flow phase started from stage 4's model, on
#     $data/train plus $flow_extra_data
#   tokenizer_steps llm_steps flow_steps flow_ft_steps vocoder_steps vocoder_gan_steps (optional,
#     default empty: the config's trainer.max_steps): a shorter or longer schedule for that phase,
#     passed to its trainer as --max-steps (the LR schedule follows it)
#   flow_ft_threads (optional, default 1): torch threads of that phase (the first phase trains
#     beside the LLM and the vocoder with one; by the second, on 2 cores, it is alone), and of
#     the first phase once the LLM, vocoder and speaker verifier beside it are done (parallel=true)
#   flow_procs (optional, default 1): on CPU, more than 1 trains the flow, once it is alone, in
#     that many processes of one thread each (DDP, each a share of every batch: the same batches
#     and schedule, faster than threads for small models) instead of flow_ft_threads threads:
#     the first phase stops when the jobs beside it are done and resumes so (parallel=true), and
#     the second phase runs so
#   onnx_export (optional, default true: stage 6 also writes $exp/model/onnx, `voxlm export onnx`)
#   parallel (optional, default false): independent stages side by side, see run_stages
#   init_model (optional, default empty): a packaged VoxLM model dir to fine-tune on $data: its
#     tokenizer and speaker verifier are used as they are (stage 1 and the verifier's training are
#     skipped: the tokens must be the ones its LLM and flow speak), and the LLM, the flow and the
#     vocoder start from its weights (the configs give the schedules; their architectures are its)
# Each stage leaves a .done sentinel (run_once): a rerun skips it; a killed stage reruns and its
# commands resume (trainers from their last atomic checkpoint with the same data order,
# extraction from its parts).
#
# Many GPUs: --ngpu N trains on N GPUs per node (Lightning starts the processes; DDP, or FSDP
# where a config says strategy: fsdp); --num_nodes M with --launcher "srun" (inside a SLURM
# allocation of M nodes x N tasks) starts every rank, and Lightning reads the environment.
# Token extraction runs sharded under the same launcher, then merges on this node.

py() { "$VOXLM_PY" "$@"; }
# trainers and extraction: under $launcher when one is set (word-split on purpose: "srun -N 2")
# shellcheck disable=SC2086
launch() { ${launcher:-} "$VOXLM_PY" "$@"; }
# `--max-steps N` where the recipe sets <phase>_steps (e.g. flow_steps=2500), else nothing
steps_opt() { local v="${1}_steps"; if [ -n "${!v:-}" ]; then echo --max-steps "${!v}"; fi; }

_voxlm_train_opts() {  # the distributed options every trainer takes; none on CPU (the configs decide)
  train_opts=()
  if [ "${ngpu:-0}" -gt 0 ]; then train_opts+=(--accelerator gpu --devices "$ngpu"); fi
  if [ "${num_nodes:-1}" -gt 1 ]; then train_opts+=(--num-nodes "$num_nodes"); fi
  extract_opts=()
  if [ "${ngpu:-0}" -gt 0 ]; then extract_opts+=(--device cuda); fi
}

# the tokenizer the later stages use: the model's being fine-tuned, else the fine-tuning phase's
# when there is one
tokenizer_model() {
  if [ -n "${init_model:-}" ]; then echo "$init_model/tokenizer"
  elif [ "${tokenizer_ft_conf:-none}" = none ]; then echo "$exp/tokenizer/model"
  else echo "$exp/tokenizer_ft/model"; fi
}
# the flow the later stages use: the second phase's when there is one
flow_model() {
  if [ "${flow_ft_conf:-none}" = none ]; then echo "$exp/flow/model"; else echo "$exp/flow_ft/model"; fi
}
# where stage 4's report goes: beside that model
flow_report() { echo "$(dirname "$(flow_model)")/report"; }
# where stage 2 scores it: beside it, but never inside the model being fine-tuned
tokenizer_report() {
  if [ -n "${init_model:-}" ]; then echo "$exp/tokenizer/report.json"
  else echo "$(dirname "$(tokenizer_model)")/report.json"; fi
}
# the speaker verifier the model directory gets: the fine-tuned model's, else stage 6's
speaker_model() {
  if [ -n "${init_model:-}" ]; then echo "$init_model/speaker"; else echo "$exp/speaker/model"; fi
}
# stage 1: the tokenizer (ASR encoder with FSQ inside, CTC on transcripts), then optionally a
# fine-tuning phase from its model (e.g. SpecAugment on)
stage1() {
  OMP_WAIT_POLICY=PASSIVE launch -m tokenizer.train --config "$tokenizer_conf" \
    --train "$data/train" --dev "$data/dev" --exp "$exp/tokenizer" $(steps_opt tokenizer) "${train_opts[@]}"
  if [ "${tokenizer_ft_conf:-none}" != none ]; then
    OMP_WAIT_POLICY=PASSIVE launch -m tokenizer.train --config "$tokenizer_ft_conf" --init "$exp/tokenizer/model" \
      --train "$data/train" --dev "$data/dev" --exp "$exp/tokenizer_ft" "${train_opts[@]}"
  fi
}
# stage 2: speech tokens of every split (sharded over $nj workers, and over the launcher's ranks)
# shellcheck disable=SC2086
stage2() {
  if [ -n "${launcher:-}" ]; then
    launch -m tokenizer.extract --model "$(tokenizer_model)" --nj "$nj" --no-merge "${extract_opts[@]}" \
      --data "$data/train" "$data/dev" "$data/test" ${flow_extra_data:-}
  fi
  py -m tokenizer.extract --model "$(tokenizer_model)" --nj "$nj" "${extract_opts[@]}" \
    --data "$data/train" "$data/dev" "$data/test" ${flow_extra_data:-}
  py -m tokenizer.report --model "$(tokenizer_model)" --data "$data/dev" \
    --out "$(tokenizer_report)"
}
# stage 3: the text-to-speech-token LLM
stage3() {
  local init=()
  if [ -n "${init_model:-}" ]; then init=(--init-from "$init_model/llm"); fi  # fine-tuning it
  # durations of each text unit for the interleaved layout (a no-op for the continuation one)
  py -m tts.align --tokenizer "$(tokenizer_model)" --config "$llm_conf" --data "$data/train" "$data/dev"
  if [ "$llm_align_conf" != none ] && [ -z "${init_model:-}" ]; then  # alignment warm-up on text-only synthetic tokens
    OMP_WAIT_POLICY=PASSIVE launch -m tts.llm_train --config "$llm_align_conf" --synthetic-tokens \
      --train "$data/train" --dev "$data/dev" --exp "$exp/llm_align" --tokenizer "$(tokenizer_model)" \
      "${train_opts[@]}"
    init=(--init-from "$exp/llm_align/model")
  fi
  OMP_WAIT_POLICY=PASSIVE launch -m tts.llm_train --config "$llm_conf" "${init[@]}" \
    --train "$data/train" --dev "$data/dev" --exp "$exp/llm" --tokenizer "$(tokenizer_model)" \
    $(steps_opt llm) "${train_opts[@]}"
  py -m tts.llm_report --model "$exp/llm/model" --tokenizer "$(tokenizer_model)" \
    --data "$data/dev" --max-utts "$llm_report_utts" --out "$exp/llm/report.json"
}
# the vocoder the later stages use: the GAN phase's when there is one
vocoder_model() {
  if [ "${vocoder_gan_conf:-none}" = none ]; then echo "$exp/vocoder/model"; else echo "$exp/vocoder_gan/model"; fi
}
# stage 4: flow matching, speech tokens -> mel, trained on ground-truth tokens of $data/train.
# The report resynthesises dev tokens with a same-speaker prompt (mel L1, WER, SIM; the
# trained vocoder when it exists, else Griffin-Lim).
stage4() {
  local init=() extra=${flow_extra_data:-} beside=() later=() alone=(--threads "${flow_ft_threads:-1}") ddp=false
  if [ -n "${init_model:-}" ]; then init=(--init "$init_model/flow"); fi
  if [ "${flow_ft_conf:-none}" != none ]; then extra=""; fi  # the extra data join the second phase
  if [ "${flow_procs:-1}" -gt 1 ] && [ "${ngpu:-0}" = 0 ] && [ -z "${launcher:-}" ]; then
    alone=(--threads 1 --accelerator cpu --devices "$flow_procs" --strategy ddp --split-batches) ddp=true
  fi
  if [ "${parallel:-false}" = true ] && stage_enabled 3; then
    # one thread beside the LLM (and the vocoder / speaker verifier); alone once they are done
    beside=("$exp/llm/.stage3.done")
    if stage_enabled 5; then beside+=("$exp/vocoder/.stage5.done"); fi
    if stage_enabled 6 && [ -z "${init_model:-}" ]; then beside+=("$exp/speaker/.done"); fi
    if [ "$ddp" = true ]; then later=(--stop-when-done "${beside[@]}")
    else later=(--threads-when-done "${flow_ft_threads:-1}" "${beside[@]}"); fi
  fi
  # shellcheck disable=SC2206  # $extra: data dirs, split on purpose
  local phase1=(-m flow.train --config "$flow_conf" --train "$data/train" $extra --dev "$data/dev"
    --exp "$exp/flow" --tokenizer "$(tokenizer_model)" "${init[@]}" $(steps_opt flow) "${train_opts[@]}")
  launch "${phase1[@]}" --threads 1 "${later[@]}"
  if [ "${later[0]:-}" = --stop-when-done ]; then  # the rest of its schedule (a finished run trains nothing)
    launch "${phase1[@]}" "${alone[@]}"
  fi
  if [ "${flow_ft_conf:-none}" != none ]; then
    # shellcheck disable=SC2086
    launch -m flow.train --config "$flow_ft_conf" --init "$exp/flow/model" --train "$data/train" \
      ${flow_extra_data:-} --dev "$data/dev" --exp "$exp/flow_ft" --tokenizer "$(tokenizer_model)" \
      "${alone[@]}" $(steps_opt flow_ft) "${train_opts[@]}"
  fi
}
stage4_report() {
  py -m flow.report --model "$(flow_model)" --data "$data/dev" --out "$(flow_report)" \
    --vocoder "$(vocoder_model)" --chunk 50 --lookahead 4 --threads 1 --judge-jobs "$nj" \
    --max-utts "$flow_report_utts"
}
# stage 5: the vocoder: reconstruction losses ($vocoder_conf), then, with $vocoder_gan_conf,
# a GAN phase that starts from that generator
stage5() {
  local init=()
  if [ -n "${init_model:-}" ]; then init=(--init "$init_model/vocoder"); fi
  OMP_WAIT_POLICY=PASSIVE launch -m vocoder.train --config "$vocoder_conf" "${init[@]}" \
    --train "$data/train" --dev "$data/dev" --exp "$exp/vocoder" $(steps_opt vocoder) "${train_opts[@]}"
  if [ "${vocoder_gan_conf:-none}" != none ]; then
    OMP_WAIT_POLICY=PASSIVE launch -m vocoder.train --config "$vocoder_gan_conf" --init "$exp/vocoder/model" \
      --train "$data/train" --dev "$data/dev" --exp "$exp/vocoder_gan" $(steps_opt vocoder_gan) \
      "${train_opts[@]}"
  fi
  py -m vocoder.report --model "$(vocoder_model)" --data "$data/dev" \
    --max-utts "$vocoder_report_utts" --out "$(dirname "$(vocoder_model)")/report.json"
}
# stage 6: VoxLM's own speaker verifier, then one self-contained model directory
stage6_speaker() {
  OMP_WAIT_POLICY=PASSIVE launch -m tts.speaker_train --train "$data/train" --dev "$data/test" \
    --exp "$exp/speaker" --max-steps "$speaker_steps" "${train_opts[@]}"
}
stage6() {
  if [ -z "${init_model:-}" ]; then run_once "$exp/speaker/.done" stage6_speaker; fi
  py -m tts.model_dir --tokenizer "$(tokenizer_model)" --llm "$exp/llm/model" --flow "$(flow_model)" \
    --vocoder "$(vocoder_model)" --speaker "$(speaker_model)" --out "$exp/model" \
    --mel-preset "$mel_preset" \
    --examples "$data/test"  # one demo example per held-out speaker
  rm -f "$exp/model/onnx/.export.done"  # new weights: the ONNX export must run again
}
# stage 7: zero-shot clones of the held-out test speakers, judged (WER, SIM, RTF)
stage7() {
  py -m tts.cli eval --model "$exp/model" --data "$data/test" --per-speaker "$eval_per_speaker" \
    --n-candidates "1,$n_candidates" --jobs "$nj" --judge-jobs "$nj" --out "$exp/eval"
}

# Background stages (parallel=true): _bg NAME CMD... runs CMD with its output in $exp/logs/NAME.log;
# _wait_bg waits for all of them and fails when one failed.
_voxlm_bg_pids=()
_bg() {
  if [ "${#_voxlm_bg_pids[@]}" = 0 ]; then  # the recipe stops (error, Ctrl-C): so do its background stages
    trap 'kill "${_voxlm_bg_pids[@]}" 2>/dev/null || true' EXIT
  fi
  mkdir -p "$exp/logs"
  log "$1 runs in the background, log: $exp/logs/$1.log"
  "${@:2}" > "$exp/logs/$1.log" 2>&1 &
  _voxlm_bg_pids+=("$!")
}
_wait_bg() {
  local pid failed=0
  for pid in "${_voxlm_bg_pids[@]}"; do wait "$pid" || failed=1; done
  _voxlm_bg_pids=()
  if [ "$failed" = 1 ]; then log "a background stage failed: see $exp/logs/"; return 1; fi
}
_stage5_and_speaker() {  # what needs only the data: the vocoder and the speaker verifier
  if stage_enabled 5; then run_once "$exp/vocoder/.stage5.done" stage5; fi
  if stage_enabled 6 && [ -z "${init_model:-}" ]; then run_once "$exp/speaker/.done" stage6_speaker; fi
}

# With parallel=true, stages that do not depend on each other train side by side, one
# process each (what a 2-core machine does best: small models scale poorly over threads):
#   background: stage 5 (vocoder) then the speaker verifier of stage 6   (need only data)
#   foreground: stage 1 -> stage 2 -> stage 3 (LLM), with stage 4's training in the background
#   then, all joined: stage 4's report (it vocodes with the trained vocoder), stages 6 and 7.
run_stages() {
  _voxlm_train_opts
  if [ -n "${init_model:-}" ]; then
    py -m tts.model_dir --check "$init_model" --mel-preset "$mel_preset" || return 1
  fi
  if [ "${parallel:-false}" = true ] && [ -n "${launcher:-}" ]; then
    log "parallel=true is ignored under a launcher ($launcher): stages run one by one"
    parallel=false
  fi
  if stage_enabled 0; then
    log "stage 0: $stage0_desc -> $data/{train,dev,test}"
    run_once "$data/.stage0.done" stage0
    if declare -F stage0_summary >/dev/null; then stage0_summary; fi
  fi
  if [ "${parallel:-false}" = true ] && { stage_enabled 5 || stage_enabled 6; }; then
    _bg stage5_speaker _stage5_and_speaker
  fi
  if stage_enabled 1 && [ -n "${init_model:-}" ]; then
    log "stage 1: fine-tuning $init_model: its tokenizer, $(tokenizer_model), as it is"
  elif stage_enabled 1; then
    log "stage 1: tokenizer (ASR encoder + FSQ inside, CTC) on $data/train -> $(tokenizer_model)"
    run_once "$exp/tokenizer/.stage1.done" stage1
  fi
  if stage_enabled 2; then
    log "stage 2: speech tokens -> $data/{train,dev,test}/tokens; scores -> $(tokenizer_report)"
    run_once "$exp/tokenizer/.stage2.done" stage2
  fi
  if stage_enabled 4 && [ "${parallel:-false}" = true ]; then
    log "stage 4: flow matching -> $(flow_model)"
    _bg stage4 run_once "$exp/flow/.stage4.done" stage4
  fi
  if stage_enabled 3; then
    log "stage 3: llm -> $exp/llm/{model,report.json}"
    run_once "$exp/llm/.stage3.done" stage3
  fi
  if [ "${parallel:-false}" = true ]; then
    _wait_bg
  else
    if stage_enabled 4; then
      log "stage 4: flow matching -> $(flow_model)"
      run_once "$exp/flow/.stage4.done" stage4
    fi
    if stage_enabled 5; then
      log "stage 5: vocoder -> $(vocoder_model), report.json beside it"
      run_once "$exp/vocoder/.stage5.done" stage5
    fi
  fi
  if stage_enabled 4; then  # after stage 5: the report vocodes with the trained vocoder when there is one
    log "stage 4: flow report -> $(flow_report)"
    run_once "$(flow_report)/.done" stage4_report
    cat "$(flow_report)/report.md"
  fi
  if stage_enabled 6; then
    log "stage 6: speaker verifier -> $(speaker_model); package -> $exp/model"
    run_once "$exp/model/.stage6.done" stage6
    if [ "${onnx_export:-true}" = true ]; then
      log "stage 6: ONNX export -> $exp/model/onnx (report.json: sizes, opset, parity)"
      run_once "$exp/model/onnx/.export.done" py -m tts.cli export onnx --model "$exp/model"
    fi
  fi
  if stage_enabled 7; then
    log "stage 7: synthesize + evaluate -> $exp/eval"
    run_once "$exp/eval/.stage7.done" stage7
    cat "$exp/eval/summary.md"
  fi
  log "done (stages $stage..$stop_stage) in $((SECONDS / 60)) min of this run (set-up included; a resumed run counts from its restart)"
}
