# Between conf/fast.sh (~80 min, misses #8's WER bars) and the default (~4 h 20 min, meets them):
#   bash run.sh --config conf/medium.sh
# Its own data and exp dirs. Against fast.sh: longer tokenizer, LLM and flow schedules; the
# flow goes on in two processes (flow_procs) once the LLM is done. The figures it reaches:
# RESULTS.md (stop 48; stop 47 ran tokenizer 3,500 / vocoder 3,000 / LLM 2,000 / flow 4,500 in 106 min).
data=data_med
exp=exp_med
timbre_per_spk=0          # no timbre split, no second flow phase (as fast.sh)
tokenizer_steps=3000      # fast 2,500, default 6,000
vocoder_steps=2500        # ends with the tokenizer (its speaker verifier after it); no GAN phase
vocoder_gan_conf=none
llm_steps=1800            # fast 1,500, default 3,000
flow_steps=4000           # fast 2,500, default 6,000 + 4,000 on train + timbre
flow_ft_conf=none
speaker_steps=500
llm_report_utts=30
vocoder_report_utts=30
flow_report_utts=30
onnx_export=false
