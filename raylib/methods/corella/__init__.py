"""CoReLLa (Xi et al., "Play to Your Strengths", 2024): DCNv2 and an LLM trained in stages, routed by the
CRM's entropy."""

from raylib.methods.base import Method

METHOD = Method("corella", "CoReLLa: DCNv2 + LLM in three stages, routed by the CRM's entropy",
                config="raylib.methods.corella.config:CorellaJobConfig", recipe="corella.yaml",
                run="raylib.methods.corella.pipeline:run_corella",
                show="raylib.methods.corella.pipeline:summary_table",
                leaderboard_rows=("corella_routed", "corella_crm", "corella_llm", "dcnv2"))
