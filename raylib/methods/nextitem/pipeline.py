"""BIGRec and GenRec end to end: windows -> LoRA SFT of the next title -> beam search -> grounding -> NDCG/HR.

BIGRec (Bao et al. 2023): step 1 tunes the model to write the next item's title (Sec. 3.1); step 2 grounds the
top beam's text to every catalogue item by L2 distance of last-token embeddings of the BASE model (Sec. 3.2),
optionally re-weighted by popularity or by a conventional model's scores, `(1 + W)^-gamma` (Eq. 4); gamma is
searched on the validation split with Ray Tune + Optuna. GenRec (Ji et al. 2024): paraphrased templates, 10
beams, scored by exact title match (its protocol) and by grounding each beam (ours, for comparison).
Baselines on the same windows and metrics: popularity (training period) and SASRec (through the same trainer).
Every stage writes its result into `output_dir`, so a rerun resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from raylib import RaylibError
from raylib.config import data_key, to_dict
from raylib.methods.nextitem.config import NextItemJobConfig, SequenceDataConfig
from raylib.data.sequences import SequenceData, Windows, build_sequence_data, held_out_validation, sample_windows
from raylib.data.tables import read_table
from raylib.metrics import ranking_report
from raylib.methods.base import write_run_report

KS = (1, 3, 5, 10, 20)


# ------------------------------------------------------------------ data
def load_sequence_data(cfg: SequenceDataConfig) -> SequenceData:
    """All training windows (SASRec and the LLM sample draw from them), seeded samples of valid / test."""
    if cfg.dataset:
        from raylib.data.dataset import load_dataset

        dataset = load_dataset(cfg.dataset)
        dataset.require("items", ("title",), "BIGRec / GenRec (the LLM writes titles)")
        interactions, items, source = dataset.interactions, dataset.items, dataset.source
    elif cfg.source == "movielens":
        from raylib.data.movielens import load_movielens

        ml = load_movielens(cfg.movielens_dir)
        interactions, items, source = ml.interactions, ml.items, ml.source
    else:
        interactions = read_table(cfg.interactions_file, ("user_id", "item_id", "timestamp"))
        items = read_table(cfg.items_file, ("item_id", "title"))
        source = str(cfg.interactions_file)
    data = build_sequence_data(interactions, items, cfg.history_len, tuple(cfg.time_split), source,
                               cfg.readable_titles)
    if not len(data.valid) or not len(data.test):
        raise RaylibError(f"The time split {cfg.time_split} leaves no validation or no test windows.")
    data.valid, data.valid_held = held_out_validation(data.valid, cfg.valid_samples, cfg.seed)
    data.test = sample_windows(data.test, cfg.test_samples, cfg.seed + 1)
    return data


def title_records(windows: Windows, data: SequenceData, prompt: Literal["bigrec", "genrec"] = "bigrec",
                  num_templates: int = 1, seed: int = 0) -> list[dict[str, Any]]:
    """Plain-dict records for the LLM task (made for the windows it reads: samples). BIGRec: its single prompt.
    GenRec: each record gets one of its first `num_templates` paraphrased instructions, drawn with `seed`, in
    training and evaluation alike (GenRec's training and test files mix them)."""
    from raylib.methods.nextitem.task import BIGREC_TEMPLATE

    rng = np.random.default_rng(seed)
    titles = data.catalogue.titles
    records = []
    for history, target in zip(windows.histories(), windows.targets):
        template = BIGREC_TEMPLATE if prompt == "bigrec" else int(rng.integers(num_templates))
        records.append({"history": [titles[i] for i in history], "target": titles[target], "template": template})
    return records


def targets_of(windows: Windows, data: SequenceData) -> np.ndarray:
    """Each window's target as a catalogue index."""
    return windows.targets


def seen_of(job: NextItemJobConfig, windows: Windows, data: SequenceData) -> list[set[int]] | None:
    """Catalogue positions of each window's history when `exclude_seen` takes them out of the rankings."""
    return [set(history.tolist()) for history in windows.histories()] if job.exclude_seen else None


# ------------------------------------------------------------------ generation and embeddings (Ray tasks)
def load_for_inference(job: NextItemJobConfig, adapter_dir: str | None):
    """The model (adapter merged: no LoRA cost at inference) and tokenizer, in this process, on its device, in
    the generation dtype (the dtype rule). Pipelines call it inside tasks placed by `raylib.placement`."""
    from raylib.model import load_tokenizer, load_with_adapter
    from raylib.placement import choose_dtype, device

    here = device()
    model = load_with_adapter(job.model, adapter_dir, here, choose_dtype(job.generation.dtype, here))
    return model, load_tokenizer(job.model)


def prompts_for(job: NextItemJobConfig, tokenizer, records: list[dict[str, Any]]) -> list[str]:
    from raylib.methods.nextitem.task import fitted_prompt

    budget = job.data.max_length - job.generation.max_new_tokens
    return [fitted_prompt(tokenizer, r, budget, job.data.domain, f"record {i}") for i, r in enumerate(records)]


class BeamSearcher:
    """The tuned model, loaded once where it is placed; the beams of a list of records per call."""

    def __init__(self, job: NextItemJobConfig, adapter_dir: str | None, answers: list[str] | None = None):
        from raylib.generation import TokenTrie
        from raylib.prompts import bigrec_prompt

        self.job = job
        self.model, self.tokenizer = load_for_inference(job, adapter_dir)
        # BIGRec's and GenRec's prompts end in the same response header, which is what the answers follow
        self.allowed = TokenTrie.of_answers(self.tokenizer, answers, bigrec_prompt([], job.data.domain)) \
            if answers else None

    def beams(self, records: list[dict[str, Any]], desc: str = "beam search", progress: bool = True) -> list[list[str]]:
        from raylib.generation import beam_search

        g = self.job.generation
        return beam_search(self.model, self.tokenizer, prompts_for(self.job, self.tokenizer, records), g.num_beams,
                           g.max_new_tokens, g.batch_size, progress=progress, desc=desc, allowed=self.allowed)


@dataclasses.dataclass(frozen=True)
class BeamMaker:
    """What each beam-search actor builds (`raylib.batch`): a `BeamSearcher`, then the beams of a batch of
    title records."""
    job: NextItemJobConfig
    adapter_dir: str | None
    answers: list[str] | None

    def __call__(self):
        searcher = BeamSearcher(self.job, self.adapter_dir, self.answers)
        return lambda batch: {"beams": searcher.beams(batch.to_pylist(), progress=False)}


def generate_beams(job: NextItemJobConfig, adapter_dir: str | None, records: dict[str, list[dict[str, Any]]],
                   key: dict[str, Any], folder: Path, answers: list[str] | None = None) -> dict[str, list[list[str]]]:
    """Beams per split (`records`: split -> records), each cached in `folder/beams_<split>.json` under `key` as
    soon as it is done; the splits not cached yet go through a Ray Data pool of placed actors (`raylib.batch`:
    `inference.actors` of them, resumable part by part). `answers`: the catalogue's answers, when
    `generation.constrained` restricts the beams to them."""
    import pyarrow as pa

    from raylib import placement
    from raylib.batch import map_rows
    from raylib.stages import cached_value, keep

    suffix = "-constrained" if job.generation.constrained else ""  # both kinds of beams stay cached side by side
    files = {split: folder / f"beams_{split}{suffix}.json" for split in records}
    beams = {split: cached_value(files[split], key) for split in records}
    missing = [split for split in records if beams[split] is None]
    if missing:  # every missing split in one pass of the pool (the model loaded once per actor)
        rows = [r for split in missing for r in records[split]]
        out = map_rows(BeamMaker(job, adapter_dir, answers if job.generation.constrained else None),
                       pa.Table.from_pylist(rows), Path(job.output_dir).expanduser().resolve() / "inference" / "beams",
                       key, placement.for_job(job), job.inference.actors, batch_rows=4 * job.generation.batch_size,
                       desc=f"beam search ({', '.join(missing)})").column("beams").to_pylist()
        for split in missing:
            beams[split], out = keep(files[split], key, out[:len(records[split])]), out[len(records[split]):]
    return beams


@dataclasses.dataclass(frozen=True)
class TitleEmbedder:
    """What each embedding actor builds (`raylib.batch`): the BASE model (BIGRec Sec. 3.2), then the embeddings
    of a batch of titles."""
    job: NextItemJobConfig

    def __call__(self):
        from raylib.methods.nextitem.grounding import embed_texts

        model, tokenizer = load_for_inference(self.job, None)
        g = self.job.grounding
        return lambda batch: {"embedding": embed_texts(model, tokenizer, batch.column("title").to_pylist(),
                                                        g.batch_size, progress=False, pooling=g.pooling).numpy()}


def catalogue_embedding(job: NextItemJobConfig, catalogue) -> torch.Tensor:
    """Every catalogue title's embedding [items, hidden] (float32), cached by model, dtype, catalogue and
    pooling (`grounding.catalogue_cache`); when not cached, the distinct titles are embedded by a Ray Data pool
    of placed actors (`raylib.batch`, resumable part by part): duplicate titles get the very same vector."""
    import pyarrow as pa

    from raylib import placement
    from raylib.batch import map_rows
    from raylib.methods.nextitem.grounding import catalogue_cache, read_cached, write_cached
    from raylib.model import weights_digest

    g, where = job.grounding, placement.for_job(job)
    model_key = f"{job.model.name}|{placement.dtype_there(job.generation.dtype, where)}"
    if weights_digest(job.model.name):  # a local folder: the weights it holds now, not its name
        model_key += f"|{weights_digest(job.model.name)}"
    path = catalogue_cache(g.cache_dir, model_key, catalogue.fingerprint(), g.pooling)
    cached = read_cached(path, len(catalogue))
    if cached is not None:
        return cached
    distinct = list(dict.fromkeys(catalogue.titles))
    out = map_rows(TitleEmbedder(job), pa.table({"title": distinct}), Path(job.output_dir).expanduser().resolve() /
                   "inference" / "catalogue", {"model": model_key, "pooling": g.pooling}, where, job.inference.actors,
                   batch_rows=16 * g.batch_size, desc="embedding the catalogue")
    column = out.column("embedding").combine_chunks()
    vectors = torch.from_numpy(column.flatten().to_numpy().reshape(len(distinct), -1).copy())
    row = {title: k for k, title in enumerate(distinct)}
    embeddings = vectors[torch.tensor([row[t] for t in catalogue.titles])]
    write_cached(path, embeddings, {"model": model_key, "catalogue": catalogue.fingerprint(),
                                    "items": str(len(catalogue)), "pooling": g.pooling})
    return embeddings


def texts_embedded(job: NextItemJobConfig, texts: list[list[str]]) -> list[torch.Tensor]:
    """Embeddings of each list of generated texts by the BASE model (runs where it is placed)."""
    from raylib.methods.nextitem.grounding import embed_texts

    model, tokenizer = load_for_inference(job, None)
    g = job.grounding
    return [embed_texts(model, tokenizer, t, g.batch_size, pooling=g.pooling) for t in texts]


def embed(job: NextItemJobConfig, catalogue, texts: list[list[str]]):
    """(catalogue embeddings, [embeddings of each list of generated texts]): last-token (or mean,
    `grounding.pooling`) embeddings by the base model; the catalogue's by a pool of actors
    (`catalogue_embedding`), the generated texts' in one placed Ray task (`raylib.placement`)."""
    from raylib import placement

    return catalogue_embedding(job, catalogue), placement.run(texts_embedded, job, texts,
                                                              placement=placement.for_job(job))


# ------------------------------------------------------------------ stages that resume
def adapter_key(adapter_dir: Path | str | None) -> str:
    from raylib.train.checkpoint import adapter_sha1

    return "base" if adapter_dir is None else adapter_sha1(adapter_dir)


# ------------------------------------------------------------------ gamma search (Ray Tune + Optuna)
def reweighted_ndcg(params: dict[str, float], distances=None, signal=None, targets=None,
                    seen=None) -> dict[str, float]:
    """Tune objective: validation NDCG@10 / HR@10 of the re-weighted grounding for one gamma."""
    from raylib.methods.nextitem.grounding import reweight, target_ranks

    ranks = target_ranks(reweight(distances, signal, float(params["gamma"])), targets, seen=seen)
    report = ranking_report(ranks, (10,))
    return {"ndcg@10": report["ndcg@10"], "hr@10": report["hr@10"]}


def search_gamma(job: NextItemJobConfig, name: str, distances, signal, targets, run_key: str,
                 seen=None) -> dict[str, Any]:
    """gamma for `(1 + W)^-gamma` maximising VALIDATION NDCG@10 (never the test split). The persisted study is
    named after the run (`run_key`: adapter + data): a retrained model starts a new study."""
    from raylib.tune import search

    space = job.tune.space or {"gamma": {"type": "loguniform", "low": job.grounding.gamma_low,
                                         "high": job.grounding.gamma_high}}
    found = search(reweighted_ndcg, space, metric="ndcg@10", mode="max", settings=job.tune,
                  output_dir=Path(job.output_dir).expanduser().resolve(), study_name=f"gamma-{name}-{run_key}",
                  constants={"distances": distances, "signal": signal, "targets": targets, "seen": seen})
    if found["at_edge"]:
        print(f"[nextitem] the {name} gamma search's optimum lies at the edge of its range {found['at_edge']}: "
              f"widen grounding.gamma_low / gamma_high", flush=True)
    return found


def metrics_of(ranks) -> dict[str, float]:
    return ranking_report(np.asarray(ranks), KS)


def generation_stats(beams: list[list[str]], titles: set[str]) -> dict[str, float]:
    """How often the top beam is empty, or is no catalogue title (it still grounds; counted, not fatal)."""
    from raylib.prompts import answer_text

    top = [answer_text(b[0]) if b else "" for b in beams]
    return {"empty_share": float(np.mean([t == "" for t in top])),
            "not_a_title_share": float(np.mean([t not in titles for t in top]))}


def write_report(job: NextItemJobConfig, report: dict[str, Any]) -> Path:
    return write_run_report(report["method"], job.output_dir, job, {k: v for k, v in report.items()
                                                                    if k != "method"})


def finish_report(job: NextItemJobConfig, method: str, data: SequenceData, ranks: dict, test_beams, result,
                  start: float, **extra) -> dict[str, Any]:
    """The job's report (metrics per method, generation stats, training history, ranks), also written to
    `<output_dir>/report.json`."""
    report = {"method": method, "test_windows": len(data.test), "catalogue_items": len(data.catalogue),
              "metrics": {m: metrics_of(r) for m, r in ranks.items()}, **extra,
              "generation": generation_stats(test_beams, set(data.catalogue.titles)),
              "adapter_dir": str(result.published_dir),
              "train": {"wall_time_s": result.wall_time_s, "best_epoch": result.state.best_epoch,
                        "history": result.state.history},
              "ranks": {m: np.asarray(r).tolist() for m, r in ranks.items()},
              "wall_time_s": time.time() - start}
    report["report_path"] = str(write_report(job, report))
    return report


def summary_table(report: dict[str, Any]) -> str:
    methods = [m for m in report["metrics"]]
    lines = [f"{'':<18}" + "".join(f"{k:>10}" for k in ("NDCG@10", "HR@10", "NDCG@20", "HR@20"))]
    for m in methods:
        r = report["metrics"][m]
        lines.append(f"{m:<18}" + "".join(f"{r[k]:>10.4f}" for k in ("ndcg@10", "hr@10", "ndcg@20", "hr@20")))
    lines.append(f"test windows: {report['test_windows']}, catalogue: {report['catalogue_items']} items "
                 f"(full ranking), wall {report['wall_time_s']:.0f} s")
    lines.append(f"report: {report.get('report_path', '')}")
    return "\n".join(lines)


@dataclasses.dataclass
class Baselines:
    ranks: dict[str, np.ndarray]
    cf_valid: np.ndarray | None  # SASRec scores of the validation windows (BIGRec's CF signal)
    cf_test: np.ndarray | None


def run_baselines(job: NextItemJobConfig, data: SequenceData) -> Baselines:
    """Popularity and SASRec ranks on the test windows, SASRec's scores for the CF re-weighting."""
    from raylib.methods.nextitem.grounding import popularity_ranks

    output = Path(job.output_dir).expanduser().resolve()
    seen = seen_of(job, data.test, data)
    ranks = {"popularity": popularity_ranks(data.catalogue.popularity, targets_of(data.test, data), seen)}
    # Its best epoch is picked on validation windows the gamma search does not see ("sasrec-run" held runs that
    # picked it on the same windows: they are left as they are).
    ranks["sasrec"], cf_valid, cf_test = sasrec_ranks(job, data, data.train, output / "sasrec-heldout")
    return Baselines(ranks, cf_valid, cf_test)


def sasrec_ranks(job: NextItemJobConfig, data: SequenceData, train_windows: Windows, folder: Path,
                 item_text: str | Path | None = None):
    """SASRec trained on `train_windows` (its best epoch picked on the held validation windows), then its test
    ranks and its scores of the validation and test windows. `item_text`: item embeddings as an item feature
    (`raylib.item_text`)."""
    from raylib import placement
    from raylib.methods.nextitem.grounding import target_ranks
    from raylib.methods.nextitem.sasrec import scores_of_published, train_sasrec, window_records

    print(f"[nextitem] SASRec on {len(train_windows)} training windows (Ray Train) ...", flush=True)
    trained = train_sasrec(job.sasrec, train_windows, data.valid_held, data.catalogue, folder, job.data.history_len,
                           job.ray_address, job.train.fresh_start, job.train.use_gpu, item_text)
    cf_valid, cf_test = placement.run(
        scores_of_published, str(trained), [window_records(w, data.catalogue, job.data.history_len)
                                            for w in (data.valid, data.test)], placement=placement.for_job(job))
    ranks = target_ranks(cf_test, targets_of(data.test, data), lower_is_better=False,
                         seen=seen_of(job, data.test, data))
    return ranks, cf_valid, cf_test


def llm_records(job: NextItemJobConfig, data: SequenceData, prompt: Literal["bigrec", "genrec"],
                num_templates: int = 1) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The LLM's training records (a seeded sample of the training windows) and validation records."""
    windows = sample_windows(data.train, job.data.train_samples, job.data.seed)
    return (title_records(windows, data, prompt, num_templates, job.data.seed),
            title_records(data.valid, data, prompt, num_templates, job.data.seed + 1))


def train_llm(task_cls, job: NextItemJobConfig, data: SequenceData, prompt: Literal["bigrec", "genrec"],
              num_templates: int = 1):
    from raylib.train.driver import train

    train_records, valid_records = llm_records(job, data, prompt, num_templates)
    print(f"[nextitem] LoRA SFT of the next title on {len(train_records)} windows (Ray Train + DeepSpeed) ...",
          flush=True)
    return train(task_cls, job, train_records, valid_records)


def run_bigrec(job: NextItemJobConfig, data: SequenceData | None = None,
               baselines: Baselines | None = None) -> dict[str, Any]:
    """BIGRec: SFT, top-beam grounding over the whole catalogue, popularity / CF re-weighting, baselines."""
    from raylib.methods.nextitem.grounding import grounded_ranks, l2_distances
    from raylib.prompts import answer_text
    from raylib.methods.nextitem.task import BigrecTask

    start = time.time()
    data = data or load_sequence_data(job.data)
    output = Path(job.output_dir).expanduser().resolve()
    print(f"[bigrec] {len(data.train)} train / {len(data.valid)} valid / {len(data.test)} test windows, "
          f"{len(data.catalogue)} catalogue items, from {data.source}", flush=True)
    result = train_llm(BigrecTask, job, data, "bigrec")
    key = {"adapter": adapter_key(result.published_dir), "generation": to_dict(job.generation),
           "data": data_key(job.data)}
    beams = generate_beams(job, str(result.published_dir),
                           {s: title_records(getattr(data, s), data, "bigrec") for s in ("valid", "test")}, key,
                           output / "stages", [BigrecTask.answer(t) for t in data.catalogue.titles])
    # BIGRec grounds the top beam
    catalogue_emb, text_emb = embed(job, data.catalogue,
                                    [[answer_text(b[0]) for b in beams[s]] for s in ("valid", "test")])
    embedded = dict(zip(("valid", "test"), text_emb))
    # the gamma search's trials re-rank the validation sample many times: its distances are kept whole
    valid_distances = l2_distances(embedded["valid"], catalogue_emb).numpy()
    targets = {s: targets_of(getattr(data, s), data) for s in ("valid", "test")}
    seen = {s: seen_of(job, getattr(data, s), data) for s in ("valid", "test")}
    ranks = {"bigrec": grounded_ranks(embedded["test"], catalogue_emb, targets["test"], seen=seen["test"])}
    gammas: dict[str, Any] = {}
    signals = {"pop": (data.catalogue.popularity, data.catalogue.popularity)}
    if job.baselines:
        baselines = baselines or run_baselines(job, data)
        ranks.update(baselines.ranks)
        signals["cf"] = (baselines.cf_valid, baselines.cf_test)
    study = {**key, "exclude_seen": job.exclude_seen}  # a study per model, beams and ranking protocol
    run_key = hashlib.sha1(json.dumps(study, sort_keys=True, default=str).encode()).hexdigest()[:10]
    for name, (valid_signal, test_signal) in signals.items():
        found = search_gamma(job, name, valid_distances, valid_signal, targets["valid"], run_key, seen["valid"])
        gammas[name] = found
        ranks[f"bigrec_{name}"] = grounded_ranks(embedded["test"], catalogue_emb, targets["test"], seen=seen["test"],
                                                 signal=test_signal, gamma=found["best_params"]["gamma"])
    gamma = {k: v["best_params"]["gamma"] for k, v in gammas.items()}
    # NDCG on the validation windows (never test) is what a recipe is chosen by
    valid_ranks = grounded_ranks(embedded["valid"], catalogue_emb, targets["valid"], seen=seen["valid"])
    report = finish_report(job, "bigrec", data, ranks, beams["test"], result, start, gamma=gamma,
                           gamma_search=gammas, valid_metrics={"bigrec": metrics_of(valid_ranks)},
                           valid_ranks={"bigrec": np.asarray(valid_ranks).tolist()})
    publish_for_serving(job, data, catalogue_emb, result.published_dir, gamma["pop"], report["metrics"])
    return report


def publish_for_serving(job: NextItemJobConfig, data: SequenceData, catalogue_emb, adapter_dir, gamma: float,
                        metrics: dict[str, Any]) -> Path:
    """`<output_dir>/recommender/`: what `POST /recommend` of the Serve app loads (`raylib.methods.nextitem.recommender`)."""
    from raylib.methods.nextitem.recommender import RecommenderConfig, publish_recommender

    g = job.generation
    config = RecommenderConfig(model=job.model.name, domain=job.data.domain, max_length=job.data.max_length,
                               num_beams=g.num_beams, max_new_tokens=g.max_new_tokens, pooling=job.grounding.pooling,
                               dtype=g.dtype, gamma=float(gamma), metrics=metrics.get("bigrec_pop", {}),
                               constrained=g.constrained)
    folder = publish_recommender(Path(job.output_dir).expanduser().resolve() / "recommender", config, data.catalogue,
                                 catalogue_emb, {"bigrec": Path(adapter_dir)})
    print(f"[bigrec] published for serving: {folder}", flush=True)
    return folder


def run_genrec(job: NextItemJobConfig, data: SequenceData | None = None) -> dict[str, Any]:
    """GenRec: template-paraphrased SFT, 10-beam search, exact-match and grounded ranks."""
    import torch

    from raylib.methods.nextitem.grounding import beam_ranks, exact_match_ranks
    from raylib.prompts import answer_text
    from raylib.methods.nextitem.task import GenrecTask

    start = time.time()
    data = data or load_sequence_data(job.data)
    output = Path(job.output_dir).expanduser().resolve()
    print(f"[genrec] {len(data.train)} train / {len(data.test)} test windows, {len(data.catalogue)} items, "
          f"{job.num_templates} templates, {job.generation.num_beams} beams", flush=True)
    result = train_llm(GenrecTask, job, data, "genrec", job.num_templates)
    key = {"adapter": adapter_key(result.published_dir), "generation": to_dict(job.generation),
           "data": data_key(job.data), "templates": job.num_templates}
    test_records = title_records(data.test, data, "genrec", job.num_templates, job.data.seed + 2)
    beams = generate_beams(job, str(result.published_dir), {"test": test_records}, key, output / "stages",
                           [GenrecTask.answer(t) for t in data.catalogue.titles])["test"]
    targets, seen = targets_of(data.test, data), seen_of(job, data.test, data)
    titles = data.catalogue.titles
    exact = exact_match_ranks(beams, [titles[t] for t in targets], len(data.catalogue) + 1,
                              [{titles[i] for i in items} for items in seen] if seen is not None else None)
    catalogue_emb, (beam_emb,) = embed(job, data.catalogue, [[answer_text(text) for b in beams for text in b]])
    per_query = torch.split(beam_emb, [len(b) for b in beams])  # each query's beams, grounded chunk by chunk
    ranks = {"genrec_exact": exact, "genrec_grounded": beam_ranks(per_query, catalogue_emb, targets, seen)}
    return finish_report(job, "genrec", data, ranks, beams, result, start)
