"""Tasks of the shared trainer (`raylib.train.task.Task`): what trains and how it is judged, one file each.

  sft       prompt -> response LoRA fine-tuning, best epoch by validation loss (the common case)
  tallrec   TALLRec's Yes./No. rec-tuning, best epoch by validation AUC
"""
