"""Reports generated from run records (`python -m glu_study.report`).

records.py     RunRecord / FinetuneRecord, read from run directories or W&B; raw records copied beside a report
table1.py      Table 1: per-variant statistics vs FFN_ReLU, the paper's figures, a generated reading
tables2_4.py   Tables 2-4: fine-tuned dev scores per task and benchmark averages
figures.py     curves.png, ranking.png, and the byte-stable way every figure is saved
"""
