"""TALLRec (Bao et al., RecSys 2023): LoRA on a few Yes/No preference samples."""

from raylib.methods.base import Method

METHOD = Method("tallrec", "TALLRec: LoRA on a few Yes/No samples, AUC from the answer token's logits",
                config="raylib.methods.tallrec.config:TallrecJobConfig", recipe="tallrec.yaml",
                run="raylib.methods.tallrec.pipeline:run_tallrec",
                show="raylib.methods.tallrec.pipeline:summary_table", leaderboard_rows=("tallrec", "zero_shot"))
