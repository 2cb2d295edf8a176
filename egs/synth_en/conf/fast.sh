# The recipe cut to fit #8's 90-minute budget on a 2-core CPU, corpus to table:
#   bash run.sh --config conf/fast.sh        (later options still win: --config conf/fast.sh --exp x)
# Its own data and exp dirs, so it never resumes into (or over) the default run's.
# Against the default (conf/*.yaml, ~4 h 20 min here): no timbre split and no second flow phase,
# no GAN phase for the vocoder, shorter schedules everywhere (each LR schedule follows its steps),
# reports on 30 dev utterances, no ONNX export. The figures it reaches: README, "The fast recipe".
data=data_fast
exp=exp_fast
timbre_per_spk=0          # default 30: 3.6 min of corpus and the flow's second phase on 1.3 h more
tokenizer_steps=2500      # default 6,000 (val CER 0.31 at step 2,000 of those, 0.16 at 6,000)
vocoder_steps=3000        # default: 45 min of reconstruction (~6,400 steps), then 45 min of GAN
vocoder_gan_conf=none
llm_steps=1500            # default 3,000
flow_steps=2500           # default 6,000, then 4,000 more on train + timbre
flow_ft_conf=none
speaker_steps=500         # default 1,500
llm_report_utts=30
vocoder_report_utts=30
flow_report_utts=30
onnx_export=false         # `voxlm export onnx --model exp_fast/model` does it later (~5 min)
