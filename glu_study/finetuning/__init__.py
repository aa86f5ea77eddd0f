"""Fine-tuning on GLUE, SuperGLUE and SQuAD (the paper's Tables 2-4).

tasks.py       the task registry, T5's text-to-text casting, loaders (hub or local files, one code path)
metrics.py     scoring generated text with each task's official metric; benchmark averages
mixture.py     tokenised training pairs, examples-proportional mixing, batches as a function of (seed, step)
evaluation.py  greedy generation on the dev splits, scored per task
"""
