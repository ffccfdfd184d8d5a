"""Next-item recommendation by generation: BIGRec (Bao et al., 2023) and GenRec (Ji et al., 2024), which share
their data, training and grounding here."""

from raylib.methods.base import Method

BIGREC = Method("bigrec", "BIGRec: generate the next title, ground it to the catalogue, re-weight",
                config="raylib.methods.nextitem.config:BigrecJobConfig", recipe="bigrec.yaml",
                run="raylib.methods.nextitem.pipeline:run_bigrec",
                show="raylib.methods.nextitem.pipeline:summary_table",
                leaderboard_rows=("bigrec", "bigrec_pop", "bigrec_cf", "popularity", "sasrec"))
GENREC = Method("genrec", "GenRec: paraphrased prompts, beam search, exact and grounded ranks",
                config="raylib.methods.nextitem.config:GenrecJobConfig", recipe="genrec.yaml",
                run="raylib.methods.nextitem.pipeline:run_genrec",
                show="raylib.methods.nextitem.pipeline:summary_table", leaderboard_rows=("genrec", "genrec_grounded"))
