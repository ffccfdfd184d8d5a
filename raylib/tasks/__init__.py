"""Tasks of the shared trainer (`raylib.train.task.Task`): what trains and how it is judged, one file each.

  sft       prompt -> response LoRA fine-tuning, best epoch by validation loss (the common case)
  tallrec   TALLRec's Yes./No. rec-tuning, best epoch by validation AUC
  nextitem  BIGRec / GenRec: the next item's title, best epoch by validation loss
  sasrec    SASRec, the whole small model, best epoch by validation NDCG@10
  crm       DCNv2 alone (CoReLLa stage 1), best epoch by validation AUC
  corella   CoReLLa's joint stage (LLM + CRM + alignment in one engine) and LLM-only stage
  whole_model  safetensors checkpoints of a small model trained whole (SASRec, DCNv2)
"""
