"""Training machinery shared by the commands (train, finetune, evaluate) and the benchmark scripts.

loop.py         the step loop: logging with the non-finite check, eval/checkpoint intervals, SIGTERM/SIGUSR2
optim.py        optimizer, learning-rate schedule, one optimizer step (grad accumulation, bf16 autocast)
adafactor.py    the paper's Adafactor without host synchronisation in its step (trainer=gpu)
checkpoints.py  complete-or-absent checkpoints and exact resume
distributed.py  torchrun ranks and the two collectives the loop needs
tracking.py     metrics.jsonl + Weights & Biases
run_dir.py      the run directory's files: names, records, the Hugging Face export
heldout.py      held-out log-perplexity, the paper's metric
"""
