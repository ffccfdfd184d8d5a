"""RecCocktail (Hou et al., 2025): a domain-general and a domain-specific LoRA mixed in weight space by
entropy minimisation."""

from raylib.methods.base import Method

METHOD = Method("cocktail", "RecCocktail: a base-spirit and an ingredient LoRA mixed by entropy, folded into one",
                config="raylib.methods.cocktail.config:CocktailJobConfig", recipe="cocktail.yaml",
                run="raylib.methods.cocktail.pipeline:run_cocktail",
                show="raylib.methods.cocktail.pipeline:summary_table", leaderboard_rows=("cocktail",))
