"""Benchmark preparers: ``python -m gsco.data.prepare NAME --root DIR`` (see cli.py and DATASET.md).

files.py     fetching (resumable, MD5-checked, atomic) and writing only what is missing or different
medmnist.py  the 18 MedMNIST datasets at every published size (the ``medmnist`` package's table)
pcam.py      PatchCamelyon -> PCam200 (a documented, seeded draw)
vqa.py       VQA-RAD, SLAKE, PathVQA, PMC-VQA -> MedDr evaluation metafiles, closed / open marked
reports.py   IU-Xray and MIMIC-CXR in R2Gen's layout, checked
"""
