"""CoReLLa end to end (Xi et al., "Play to Your Strengths", 2024): three training stages, threshold search,
routed evaluation, and the artifacts the serving layer loads.

  stage 1  CRM warm-up: DCNv2 on the whole training split (`raylib.methods.corella.crm`, ZeRO-0 fp32)
  stage 2  joint: LoRA LLM + CRM + projections in one DeepSpeed engine, a*L_llm + b*L_crm + c*L_align, on a
           random training subset (`raylib.methods.corella.task.CorellaJointTask`)
  stage 3  LLM only on another random subset, from stage 2's adapter (`CorellaLlmTask`)
  routing  the entropy threshold, searched with Ray Tune + Optuna on the VALIDATION split under the LLM budget
  report   AUC / LogLoss / accuracy of the CRM alone, the LLM alone and the routed system on the same fixed test
           subset, the LLM share, and the inference cost (routed time / LLM-alone time)

`CorellaRecipe` runs them as named steps. Every stage is a Ray Train run with checkpoints in
`output_dir/stage*/`: a crashed stage resumes from its last epoch and finished stages are not redone; scores are
cached under the models' hashes (`raylib.stages`).
Artifacts in `output_dir/artifacts/`: `crm/` (model.safetensors, config.json, vocab.json), `adapter/` (PEFT),
`routing.json` (threshold + the hashes of the vocabulary, CRM and adapter it was tuned with).
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raylib import RaylibError
from raylib.config import data_key, stage_job, to_dict
from raylib.methods.corella.config import CorellaJobConfig, CorellaStageJob, CrmJobConfig
from raylib.data.ctr import CtrData, CtrSamples, CtrVocab, load_ctr_data, sample_rows, write_encoded
from raylib.metrics import binary_report
from raylib.methods.base import write_run_report
from raylib.methods.corella.artifacts import ARTIFACTS_DIR, STAGE_DIRS, RoutedScorer, publish_artifacts
from raylib.stages import cached_stage, file_sha1
from raylib.methods.corella.routing import (MAX_ENTROPY, combine, entropy, routing_decision,
                                            split_for_decision, to_llm, tune_threshold)

METHODS = ("crm", "llm", "routed")
VIEWS_DIR = "views"  # a stage's training and validation samples as Parquet, under its output_dir


def _output(job) -> Path:
    return Path(job.output_dir).expanduser().resolve()


# ------------------------------------------------------------------ the data, encoded once
@dataclass(frozen=True)
class CorellaViews:
    """Every view of the job's data a stage reads, made once by `prepare_views` and handed down: the stages, the
    scoring and the report never go back to the tables. The whole splits stay columns (`CtrSamples`: the CRM
    reads them as Parquet, written a chunk at a time); the samples the LLM reads are records with their text."""

    vocab: CtrVocab
    source: str
    crm_train: CtrSamples  # stage 1: the whole training split
    crm_valid: CtrSamples  # stage 1's per-epoch validation: the whole validation split
    joint_train: list[dict[str, Any]]  # stage 2: a random training subset, with texts for the LLM
    llm_train: list[dict[str, Any]]  # stage 3: another subset, disjoint from stage 2's
    stage_valid: list[dict[str, Any]]  # stages 2 and 3: the per-epoch validation sample
    valid: list[dict[str, Any]]  # the threshold search: a fixed validation sample both models score
    test: list[dict[str, Any]]  # the report: a fixed test sample both models score
    full_test: CtrSamples  # the CRM alone on the whole test split


def prepare_views(job: CorellaJobConfig, data: CtrData) -> CorellaViews:
    """The vocabulary (from the training split) and every view of `data`, each a seeded sample where it is one."""
    vocab = CtrVocab.build(data.train, data.features)
    n, s = data.train.num_rows, job.stages
    order = np.random.default_rng(job.data.seed).permutation(n)
    joint = np.sort(order[:min(s.joint_samples, n)])
    rest = order[min(s.joint_samples, n):]
    llm = np.sort(rest[:s.llm_samples]) if len(rest) else joint  # a tiny table: reuse the joint subset
    texts = lambda samples: vocab.records(samples, with_text=True)  # noqa: E731
    return CorellaViews(
        vocab=vocab, source=data.source, crm_train=data.train, crm_valid=data.valid,
        joint_train=texts(data.train.take(joint)), llm_train=texts(data.train.take(llm)),
        stage_valid=texts(sample_rows(data.valid, s.valid_samples, job.data.seed + 1)),
        valid=texts(sample_rows(data.valid, job.data.valid_samples, job.data.seed + 2)),
        test=texts(sample_rows(data.test, job.data.test_samples, job.data.seed + 3)),
        full_test=data.test)


# ------------------------------------------------------------------ stage 1's job and samples
def crm_stage(job: CorellaJobConfig, views: CorellaViews,
              item_text: str | Path | None = None) -> tuple[CrmJobConfig, Path, Path]:
    """Stage 1's job and its training and validation samples as Parquet (field indices, written a chunk at a
    time under the stage's output_dir, beside the vocabulary they come from). The trainer's choice for a model
    this small (well under a million parameters per field table): DeepSpeed ZeRO stage 0 in fp32, i.e. plain
    data parallelism (gradients all-reduced, nothing partitioned). `item_text`: item embeddings (the
    `raylib.item_text` Parquet) that DCNv2 reads as one more item field."""
    from raylib.item_text import aligned, save_table
    from raylib.methods.corella.crm import VOCAB_FILE, DCNv2Config
    from raylib.train.whole_model import whole_model_train

    s = job.crm
    output, table, text_dim = _output(job) / STAGE_DIRS["crm"], None, 0
    encoded = output / VIEWS_DIR
    encoded.mkdir(parents=True, exist_ok=True)
    views.vocab.save(encoded / VOCAB_FILE)
    if item_text is not None:
        vectors = aligned(item_text, views.vocab.fields["item_id"], views.vocab.sizes["item_id"])
        table, text_dim = save_table(encoded / "item_text.safetensors", vectors), vectors.shape[1]
    shape = DCNv2Config.of(s, views.vocab, text_dim).as_dict()
    t = job.train
    stage = stage_job(CrmJobConfig, where="CRM stage", model={"dtype": "fp32"}, crm=s, crm_shape=shape,
                      item_text=table, vocab=str(encoded / VOCAB_FILE), output_dir=str(output),
                      ray_address=job.ray_address,
                      train=whole_model_train(s, eval_batch_size=4096, seed=t.seed, fresh_start=t.fresh_start,
                                              use_gpu=t.use_gpu, max_failures=t.max_failures,
                                              storage_path=t.storage_path))
    return (stage, write_encoded(views.crm_train, views.vocab, encoded / "train.parquet"),
            write_encoded(views.crm_valid, views.vocab, encoded / "valid.parquet"))


def whole_crm(folder: Path, vocab: CtrVocab) -> Path:
    """`folder`, a published CRM, checked against the run's vocabulary before anything reads it. Versions before
    the CRM task wrote its vocabulary published the folder first and added the vocabulary afterwards: a run they
    left half done is completed here (the vocabulary, which the run's views made, and its hash), so it resumes."""
    from raylib.methods.corella.crm import CONFIG_FILE, VOCAB_FILE, read_crm_config

    if not (folder / VOCAB_FILE).is_file():
        vocab.save(folder / VOCAB_FILE)
        config = json.loads((folder / CONFIG_FILE).read_text())
        (folder / CONFIG_FILE).write_text(json.dumps({**config, "vocab_hash": vocab.fingerprint()}, indent=1))
    read_crm_config(folder, expect_vocab=vocab.fingerprint())
    return folder


# ------------------------------------------------------------------ inference
def crm_scores_of(crm_dir: str, records: list[dict[str, Any]]) -> np.ndarray:
    """P(like) of `records` by a published CRM (pipelines run it in a Ray task, `raylib.placement`)."""
    from raylib.methods.corella.crm import crm_probabilities, load_crm

    return crm_probabilities(load_crm(crm_dir)[0], records)


@dataclass(frozen=True)
class CrmScorer:
    """What each scoring actor builds (`raylib.batch`): a published CRM, then P(like) of a batch of encoded
    samples (`write_encoded`'s columns)."""
    crm_dir: str

    def __call__(self):
        from raylib.methods.corella.crm import crm_probabilities, load_crm

        crm = load_crm(self.crm_dir)[0]
        return lambda batch: {"p_like": crm_probabilities(crm, batch.to_pylist())}


def crm_scores_of_split(job: CorellaJobConfig, crm_dir: Path, vocab: CtrVocab, samples: CtrSamples) -> np.ndarray:
    """P(like) of a whole split by a published CRM, in a Ray Data pool of placed actors (`raylib.batch`): the
    split's field indices are made and written a chunk at a time, so neither side holds it as Python objects."""
    from raylib import placement
    from raylib.batch import map_rows
    from raylib.data.timelines import chunks

    encoded = (samples.slice(a, b).encoded(vocab) for a, b in chunks(samples.num_rows, 1 << 16))
    out = map_rows(CrmScorer(str(crm_dir)), encoded, _output(job) / "inference" / "crm",
                   {"crm": file_sha1(Path(crm_dir) / "model.safetensors")}, placement.for_job(job),
                   job.inference.actors, batch_rows=1 << 14, desc="CRM scoring")
    return np.asarray(out.column("p_like").to_numpy())


class _ScorerOnFirstUse:
    """The `RoutedScorer` actor (both models), started when first called: a rerun whose scores are all cached
    loads no weights. A context manager: the actor ends with the block."""

    def __init__(self, crm_dir: Path, adapter_dir: Path, job: CorellaJobConfig):
        self.args, self.job, self.placed = (crm_dir, adapter_dir, job), job, None

    def __call__(self, method: str, *args):
        from raylib import placement

        self.placed = self.placed or placement.start(RoutedScorer, *self.args, placement=placement.for_job(self.job))
        return self.placed.call(method, *args)

    def __enter__(self) -> "_ScorerOnFirstUse":
        return self

    def __exit__(self, *exc) -> None:
        if self.placed is not None:
            self.placed.close()


@dataclass(frozen=True)
class Scores:
    """Both models' P(like) on the fixed validation and test samples, and the routed run on test."""
    valid: dict[str, Any]  # crm, llm
    test: dict[str, Any]  # crm, llm, crm_seconds, llm_seconds
    routing: dict[str, Any]  # the threshold search, the decision, the threshold used
    routed: dict[str, Any]  # mask, probs, seconds


# ------------------------------------------------------------------ the recipe
class CorellaRecipe:
    """CoReLLa's job as named steps; `run` is the table of contents. Each step is usable alone (the leaderboard's
    budget points train the two LLM stages from their own CRM), and a benchmark changes a step by subclassing
    (`raylib.bench.corella` shares stage 1 between two runs)."""

    def __init__(self, job: CorellaJobConfig):
        self.job, self.output = job, _output(job)

    def run(self) -> dict[str, Any]:
        start = time.time()
        views = self.load_views()
        crm_dir = self.train_crm(views)
        joint_dir = self.train_joint(views, crm_dir)
        llm_dir = self.train_llm(views, joint_dir)
        final_crm, adapter = joint_dir / "crm", llm_dir / "adapter"  # the routed system's two models
        scores = self.score_and_route(views, final_crm, adapter)
        artifacts = self.publish(views, final_crm, adapter, scores)
        stages = {"crm": crm_dir, "joint": joint_dir, "llm": llm_dir}
        return self.write_report(views, final_crm, scores, artifacts, stages, start)

    # ---------------------------------------------------------------- data
    def load_views(self) -> CorellaViews:
        """The tables, read once, and every view of them (`prepare_views`); a table without titles stops here."""
        data = load_ctr_data(self.job.data)
        if not any(data.train.slice(0, 1000).texts()["title"]):  # before any training: the LLM reads titles
            raise RaylibError(f"Dataset {data.source}: CoReLLa's LLM needs column ['title'] in its items, which it "
                              "lacks; the CRM alone trains without it (`prepare_views`, then "
                              "`CorellaRecipe.train_crm`).")
        views = prepare_views(self.job, data)
        print(f"[corella] {views.crm_train.num_rows} train / {views.crm_valid.num_rows} valid / "
              f"{views.full_test.num_rows} test samples from {views.source}; "
              f"vocabulary {views.vocab.fingerprint()[:12]}", flush=True)
        return views

    # ---------------------------------------------------------------- training
    def train_crm(self, views: CorellaViews, item_text: str | Path | None = None) -> Path:
        """Stage 1: DCNv2 on the whole training split through the shared Ray Train loop (`crm_stage`). Returns
        the published CRM folder (weights, config, vocabulary)."""
        from raylib.methods.corella.crm import CrmTask
        from raylib.train.driver import train

        stage, train_path, valid_path = crm_stage(self.job, views, item_text)
        print(f"[corella] stage 1: DCNv2 on {views.crm_train.num_rows} samples (Ray Train, ZeRO-0 fp32) ...",
              flush=True)
        return whole_crm(Path(train(CrmTask, stage, train_path, valid_path).published_dir), views.vocab)

    def train_joint(self, views: CorellaViews, crm_dir: Path) -> Path:
        """Stage 2: the LLM, the CRM from `crm_dir` and the alignment projections in one DeepSpeed engine."""
        from raylib.methods.corella.crm import read_crm_config

        shape, _ = read_crm_config(crm_dir)  # DCNv2's arguments (the vocabulary's hash aside)
        print(f"[corella] stage 2: LLM + CRM + alignment, one DeepSpeed engine, {len(views.joint_train)} "
              "samples ...", flush=True)
        joint = self._train_llm_stage("joint", views.joint_train, views.stage_valid, crm_shape=shape,
                                      init_crm=str(crm_dir))
        whole_crm(joint / "crm", views.vocab)  # its CRM keeps stage 1's vocabulary
        return joint

    def train_llm(self, views: CorellaViews, joint_dir: Path) -> Path:
        """Stage 3: the LLM alone, from the joint stage's adapter."""
        print(f"[corella] stage 3: LLM only, {len(views.llm_train)} samples ...", flush=True)
        return self._train_llm_stage("llm", views.llm_train, views.stage_valid,
                                     init_adapter=str(joint_dir / "adapter"))

    def _train_llm_stage(self, stage: str, train_records, valid_records, **start_weights) -> Path:
        from raylib.methods.corella.task import STAGE_TASKS
        from raylib.train.driver import train

        folder = self.output / STAGE_DIRS[stage]
        job = stage_job(CorellaStageJob, self.job, f"{stage} stage", stage=stage, output_dir=str(folder),
                        **start_weights)
        return Path(train(STAGE_TASKS[stage], job, train_records, valid_records).published_dir)

    # ---------------------------------------------------------------- scoring and routing
    def score_and_route(self, views: CorellaViews, crm_dir: Path, adapter: Path) -> Scores:
        """Both models' scores on the fixed samples (the LLM is the expensive part), the threshold, and the timed
        routed run on test; each cached under the models' hashes, one Ray actor holding both models."""
        job = self.job
        key = {"crm": file_sha1(crm_dir / "model.safetensors"),
               "adapter": file_sha1(adapter / "adapter_model.safetensors"),
               "data": data_key(job.data), "model": to_dict(job.model), "batch": job.routing.batch_size}
        stages = self.output / "scores"
        valid, test = views.valid, views.test
        with _ScorerOnFirstUse(crm_dir, adapter, job) as call:
            print(f"[corella] scoring {len(valid)} validation and {len(test)} test samples with both models ...",
                  flush=True)
            valid_scores = cached_stage(stages / "valid.json", key, lambda: call("both_scores", valid))
            test_scores = cached_stage(stages / "test.json", key, lambda: call("both_scores", test))
            routing = self.choose_threshold(views, valid_scores, key)
            routed = cached_stage(stages / "routed.json", {**key, "threshold": routing["threshold"]},
                                  lambda: call("routed_timed", test, routing["threshold"]))
        routed_probs = combine(np.array(test_scores["crm"]), np.array(test_scores["llm"]),
                               np.array(routed["mask"], bool))
        if not np.allclose(routed_probs, routed["probs"], atol=1e-5):
            raise RaylibError("Routed scores differ from the separately computed CRM / LLM scores.")
        return Scores(valid_scores, test_scores, routing, routed)

    def choose_threshold(self, views: CorellaViews, valid_scores: dict[str, Any], key: dict[str, Any]) -> dict:
        """The threshold search on part of validation (Ray Tune + Optuna under the LLM budget), then the
        decision on the held-out rest whether routing helps at all (`routing_decision`); cached."""
        job, r = self.job, self.job.routing
        crm, llm = np.array(valid_scores["crm"]), np.array(valid_scores["llm"])
        labels = np.array([row["label"] for row in views.valid])
        searched, held = split_for_decision(len(labels), r.decision_fraction, job.data.seed + 4)
        run_key = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:10]
        found = cached_stage(  # a rerun reuses the search instead of adding trials to the persisted study
            self.output / "scores" / "threshold.json",
            {**key, "tune": to_dict(job.tune), "budget": r.llm_budget, "decision_fraction": r.decision_fraction},
            lambda: tune_threshold(crm[searched], llm[searched], labels[searched], r.llm_budget, job.tune,
                                   self.output, f"threshold-{run_key}"))
        best = float(found["best_params"]["threshold"])
        if len(held):
            decision = routing_decision(crm[held], llm[held], labels[held], best, r.bootstrap_rounds, job.data.seed)
        else:
            decision = {"route": True, "reason": "routing.decision_fraction=0: always route (the paper's way)",
                        "gain": None}
        print(f"[corella] {decision['reason']}", flush=True)
        threshold = best if decision["route"] else MAX_ENTROPY  # above ln 2 no entropy lies: nothing goes to the LLM
        return {**found, "searched_threshold": best, "decision": decision, "threshold": threshold,
                "samples": {"search": len(searched), "decision": len(held)}}

    # ---------------------------------------------------------------- publishing and the report
    def publish(self, views: CorellaViews, crm_dir: Path, adapter: Path, scores: Scores) -> Path:
        """The artifacts the serving layer loads (`raylib.methods.corella.artifacts`)."""
        routing = scores.routing
        return publish_artifacts(self.job, crm_dir, adapter, views.vocab, routing["threshold"], routing["valid"],
                                 self.output / ARTIFACTS_DIR, routing["decision"]["reason"])

    def write_report(self, views: CorellaViews, crm_dir: Path, scores: Scores, artifacts: Path,
                     stages: dict[str, Path], start: float) -> dict[str, Any]:
        """AUC / LogLoss / accuracy of the CRM, the LLM and the routed system on the same test sample, the LLM
        share, the cost, the paper's pilot analyses; written as the run's report.json."""
        test, test_scores, routed = views.test, scores.test, scores.routed
        labels = np.array([r["label"] for r in test])
        crm, llm, mask = np.array(test_scores["crm"]), np.array(test_scores["llm"]), np.array(routed["mask"], bool)
        per_1000 = lambda seconds: 1000.0 * seconds / len(test)  # noqa: E731
        found = {k: v for k, v in scores.routing.items() if k != "threshold"}
        report = {
            "test_samples": len(test), "valid_samples": len(views.valid),
            "metrics": {"crm": binary_report(labels, crm), "llm": binary_report(labels, llm),
                        "routed": binary_report(labels, combine(crm, llm, mask))},
            "crm_full_test": binary_report(views.full_test.labels,
                                           crm_scores_of_split(self.job, crm_dir, views.vocab, views.full_test)),
            "llm_share": float(mask.mean()), "threshold": scores.routing["threshold"], "threshold_search": found,
            "routing": "on" if found["decision"]["route"] else "off (CRM only)",
            "seconds_per_1000": {"crm": per_1000(test_scores["crm_seconds"]),
                                 "llm": per_1000(test_scores["llm_seconds"]), "routed": per_1000(routed["seconds"])},
            "cost_ratio": routed["seconds"] / test_scores["llm_seconds"],
            "confidence_groups": confidence_groups(crm, llm, labels),
            "entropy_curve": entropy_curve(crm, llm, labels),
            "artifacts": str(artifacts), "stages": {name: str(folder) for name, folder in stages.items()},
            "training": {name: _history(folder) for name, folder in stages.items()},
            "wall_time_s": time.time() - start,
        }
        report["report_path"] = str(write_run_report("corella", self.output, self.job, report))
        return report


def run_corella(job: CorellaJobConfig) -> dict[str, Any]:
    """All stages, the threshold search, the test report and the artifacts (`CorellaRecipe`)."""
    return CorellaRecipe(job).run()


def _history(folder: Path) -> dict[str, Any]:
    summary = Path(folder) / "training_summary.json"
    return json.loads(summary.read_text()) if summary.is_file() else {}


# ------------------------------------------------------------------ analyses for the report
def confidence_groups(crm, llm, labels, groups: int = 5) -> list[dict[str, Any]]:
    """The paper's pilot study (Sec. 2): test samples in equal-size groups by CRM entropy, most confident first;
    AUC of the CRM and of the LLM inside each group."""
    order = np.argsort(entropy(crm), kind="stable")
    out = []
    for k, index in enumerate(np.array_split(order, groups)):
        y = labels[index]
        row = {"group": k + 1, "samples": int(len(index)), "max_entropy": float(entropy(crm[index]).max()),
               "positive_share": float(y.mean())}
        if 0 < y.sum() < len(y):
            row.update(crm_auc=binary_report(y, crm[index])["auc"], llm_auc=binary_report(y, llm[index])["auc"])
        out.append(row)
    return out


def entropy_curve(crm, llm, labels, points: int = 41) -> list[dict[str, float]]:
    """Routed AUC and LLM share as the threshold sweeps from ln 2 (CRM only) down to 0 (LLM only)."""
    out = []
    for threshold in np.quantile(entropy(crm), np.linspace(0, 1, points)):
        mask = to_llm(crm, float(threshold))
        out.append({"threshold": float(threshold), "llm_share": float(mask.mean()),
                    "auc": binary_report(labels, combine(crm, llm, mask))["auc"]})
    return out


def summary_table(report: dict[str, Any]) -> str:
    lines = [f"{'':<10}{'AUC':>8}{'LogLoss':>9}{'ACC':>8}{'s/1000':>9}"]
    for m in METHODS:
        r = report["metrics"][m]
        lines.append(f"{m:<10}{r['auc']:>8.4f}{r['logloss']:>9.4f}{r['accuracy']:>8.4f}"
                     f"{report['seconds_per_1000'][m]:>9.1f}")
    lines.append(f"test samples {report['test_samples']}, LLM share {report['llm_share']:.3f} at entropy threshold "
                 f"{report['threshold']:.4f}, cost ratio {report['cost_ratio']:.3f} (routed / LLM-alone time)")
    decision = report["threshold_search"].get("decision")
    if decision:
        lines.append(f"routing: {decision['reason']}")
    lines.append(f"artifacts: {report['artifacts']}; report: {report.get('report_path', '')}")
    return "\n".join(lines)

