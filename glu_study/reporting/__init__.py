"""Reports generated from run records (`python -m glu_study.report`, `python -m glu_study.mlp`).

records.py     RunRecord / FinetuneRecord, read from run directories or W&B; raw records copied beside a report
table1.py      Table 1: per-variant statistics vs FFN_ReLU, the paper's figures, a generated reading
tables2_4.py   Tables 2-4: fine-tuned dev scores per task and benchmark averages
lr_check.py    the learning-rate check beside a study: the figure per variant and plateau, the pick
scaling.py     the variants across model sizes: per-size differences, the trend with size
fall_probe.py  the fall probe: where the late fall's drop sits (copyable / novel tokens), its step vs the rate
figures.py     curves.png, ranking.png, and the byte-stable way every figure is saved
readme.py      a committed study as a README section, between its markers
mlp.py         the one-minute MLP comparison's records, table and figure
"""
