"""Recipes: the commands that put the library together — evaluate a generalist on a metafile (``evaluate``),
fine-tune one (``finetune``), merge a LoRA adapter (``merge_lora``), run GSCo's arms on a case file and table their
scores (``gsco``). They work for any image-text-to-text model the generalist layer loads and import nothing of a
model family's own code (``gsco.meddr``): a family is reached through :mod:`gsco.generalist.registry`. Each is
``python -m gsco.recipes.<name> [--config FILE] [key=value ...]``."""
