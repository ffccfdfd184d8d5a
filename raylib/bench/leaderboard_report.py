"""The leaderboard's figures, from per-record scores kept as Parquet.

Every row's score of every test record is written under `<output_dir>/scores/` before any figure is computed:
  preference.parquet   row, user_id, item_id, label, score (P(like)), and what the slices read: the user's and
                       the item's training interactions, the CoReLLa CRM's entropy on the record
  ranking.parquet      row, window, user_id, item_id (the target), rank (of the target, 1 = first), and the
                       user's and the item's training interactions
From them: each row's metric with its 95% bootstrap interval and its paired difference to the best baseline, the
same on every slice (cold users, cold items, the CRM's unsure and sure halves), and `compare`, the paired
bootstrap between any two rows (`raylib report <leaderboard dir> --compare ROW ROW`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raylib import RaylibError

SCORES_DIR = "scores"
PREFERENCE_BASELINES = ("zero_shot", "dcnv2")
RANKING_BASELINES = ("popularity", "sasrec")
SLICES = ("cold_users", "cold_items", "crm_unsure", "crm_sure")
METRIC = {"preference": "auc", "ranking": "ndcg@10"}


# ------------------------------------------------------------------ per-record scores
def write_scores(folder: Path, part: str, records: dict[str, Any], rows: dict[str, Any]) -> Path:
    """`<folder>/scores/<part>.parquet` in long form: one line per (row, record), a row's lines together.
    `records`: the shared columns (one value per record); `rows`: each row's values (probabilities, or ranks), in
    the records' order. Built as Arrow columns: no Python object per line."""
    value = "score" if part == "preference" else "rank"
    n = len(next(iter(records.values())))
    for name, per_record in rows.items():
        if len(per_record) != n:
            raise RaylibError(f"leaderboard: row {name} has {len(per_record)} values for {n} records.")
    names = pa.array(list(rows), pa.string())
    which = pa.array(np.repeat(np.arange(len(rows), dtype=np.int32), n))
    table = pa.table({"row": pa.DictionaryArray.from_arrays(which, names),
                      **{k: pa.concat_arrays([pa.array(v)] * len(rows)) for k, v in records.items()},
                      value: pa.array(np.concatenate([np.asarray(v, dtype=np.float64) for v in rows.values()]))})
    path = Path(folder) / SCORES_DIR / f"{part}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def read_scores(folder: Path, part: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(the shared record columns, each row's values), as `write_scores` wrote them."""
    import pyarrow.compute as pc

    path = Path(folder).expanduser() / SCORES_DIR / f"{part}.parquet"
    if not path.is_file():
        raise RaylibError(f"No {path}: is {folder} a leaderboard's output_dir after a run?")
    value = "score" if part == "preference" else "rank"
    try:
        table = pq.read_table(path)
        rows = pc.cast(table.column("row"), pa.string())
        table.column(value)
    except (pa.ArrowException, OSError, KeyError) as err:
        raise RaylibError(f"{path}: not per-record scores as the leaderboard writes them ({err}).") from None
    names = pc.unique(rows).to_pylist()  # in the order they were written
    first = table.filter(pc.equal(rows, names[0])).drop_columns(["row", value])
    records = {k: first.column(k).to_numpy() for k in first.column_names}
    values = {name: table.column(value).filter(pc.equal(rows, name)).to_numpy() for name in names}
    return records, values


# ------------------------------------------------------------------ metrics
def _per_record(part: str, values: np.ndarray) -> np.ndarray:
    """What the bootstrap resamples: P(like) for the AUC, each window's NDCG@10 gain."""
    from raylib.metrics import ndcg_gains

    return values if part == "preference" else ndcg_gains(values.astype(np.int64), 10)


def _metric(part: str, labels: np.ndarray | None, per_record: np.ndarray) -> float | None:
    from raylib.metrics import auc

    if part == "ranking":
        return float(np.mean(per_record)) if len(per_record) else None
    return auc(labels, per_record) if len(np.unique(labels)) == 2 else None


def summary(part: str, labels: np.ndarray | None, rows: dict[str, np.ndarray], baselines: tuple[str, ...],
            rounds: int) -> dict[str, dict[str, Any]]:
    """Each row's metric, its 95% bootstrap interval and its paired difference to the best baseline present
    (None where the records cannot give the metric, e.g. an AUC on records of one label)."""
    from raylib.metrics import auc, bootstrap_interval, paired_bootstrap

    key = METRIC[part]
    stat = (auc, labels) if part == "preference" else (np.mean, None)
    per = {name: _per_record(part, v) for name, v in rows.items()}
    out = {name: {key: _metric(part, labels, p), "records": int(len(p))} for name, p in per.items()}
    if any(v[key] is None for v in out.values()):
        return out
    present = [b for b in baselines if b in out]
    best = max(present, key=lambda b: out[b][key], default=None)
    for name, p in per.items():
        out[name]["ci"] = bootstrap_interval(p, stat[0], stat[1], rounds)
        if best and name != best:
            found = paired_bootstrap(p, per[best], stat[0], stat[1], rounds)
            out[name]["vs_best"] = {"baseline": best, "diff": found["diff"], "ci": found["ci"]}
    return out


def slice_masks(part: str, records: dict[str, np.ndarray], cold_max: int) -> dict[str, np.ndarray]:
    """Which records each slice holds: cold users / items (at most `cold_max` training interactions) and, where
    the CoReLLa CRM scored the records, its entropy above (unsure) and at or below (sure) its median."""
    masks = {"cold_users": records["user_train_interactions"] <= cold_max,
             "cold_items": records["item_train_interactions"] <= cold_max}
    if part == "preference" and "crm_entropy" in records:
        entropy = records["crm_entropy"].astype(np.float64)
        masks["crm_unsure"] = entropy > np.median(entropy)
        masks["crm_sure"] = ~masks["crm_unsure"]
    return masks


def slice_tables(part: str, records: dict[str, np.ndarray], rows: dict[str, np.ndarray], cold_max: int,
                 rounds: int) -> dict[str, dict[str, Any]]:
    """`slices.<slice>.<row>`: the row's metric on the slice's records, its interval, and `vs_best` (the paired
    difference to the slice's best baseline)."""
    baselines = PREFERENCE_BASELINES if part == "preference" else RANKING_BASELINES
    labels = records.get("label")
    out = {}
    for name, mask in slice_masks(part, records, cold_max).items():
        if not mask.any():
            out[name] = {}
            continue
        out[name] = summary(part, None if labels is None else labels[mask], {r: v[mask] for r, v in rows.items()},
                            baselines, rounds)
    return out


def compare(folder: Path, first: str, second: str, rounds: int = 2000) -> dict[str, Any]:
    """The paired bootstrap of `first` minus `second` on the records both scored (AUC for preference rows,
    NDCG@10 for ranking rows): what `raylib report <dir> --compare ROW ROW` prints."""
    from raylib.metrics import auc, paired_bootstrap

    known: list[str] = []
    for part in ("preference", "ranking"):
        path = Path(folder).expanduser() / SCORES_DIR / f"{part}.parquet"
        if not path.is_file():
            continue
        records, rows = read_scores(folder, part)
        known += list(rows)
        if first in rows and second in rows:
            a, b = _per_record(part, rows[first]), _per_record(part, rows[second])
            labels = records.get("label")
            found = (paired_bootstrap(a, b, auc, labels, rounds) if part == "preference"
                     else paired_bootstrap(a, b, rounds=rounds))
            return {"part": part, "metric": METRIC[part], "first": first, "second": second,
                    "records": int(len(a)), **found}
    if not known:
        raise RaylibError(f"No per-record scores under {Path(folder) / SCORES_DIR}: is {folder} a leaderboard's "
                          "output_dir after a run?")
    raise RaylibError(f"--compare {first} {second}: both must be rows of one task; rows: {', '.join(known)}.")


def compare_text(found: dict[str, Any]) -> str:
    low, high = found["ci"]
    verdict = ("leads" if low > 0 else "trails" if high < 0 else "is level with (the interval holds 0)")
    return (f"{found['first']} - {found['second']} on {found['records']} {found['part']} records: "
            f"{found['metric']} {found['diff']:+.4f} [{low:+.4f}, {high:+.4f}] (paired bootstrap, "
            f"{found['rounds']} resamples): {found['first']} {verdict} {found['second']}.")


# ------------------------------------------------------------------ the report's files
def save(report: dict[str, Any], path: Path) -> Path:
    """The report as JSON, Markdown and PNG beside each other."""
    from raylib.bench.common import write_report

    return write_report(report, path, plot, markdown)


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}" if value >= 10 else f"{value:.2f}"


def _time_line(report: dict[str, Any]) -> str:
    spent = report.get("time_spent") or {}
    if not spent.get("seconds"):
        return ""
    code = ", ".join(c or "unrecorded" for c in spent.get("code", []))
    return (f" Its output folder was made in {spent['seconds'] / 3600:.2f} h of wall time over "
            f"{spent['invocations']} invocation(s) (code: {code or 'unrecorded'}); this one took "
            f"{report['wall_time_s']:.0f} s.")


def markdown(report: dict[str, Any]) -> str:
    split = report["split"]
    lines = [f"# Leaderboard: {report['dataset']} ({report['model']})", "",
             f"One time split ({' / '.join(f'{share:g}' for share in split.get('fractions', []))} of the "
             f"interactions): validation from {split['valid_from']}, test from {split['test_from']} (unix seconds). "
             f"Command: `{report['command']}`.{_time_line(report)}", ""]
    found = conclusions(report)
    if found:
        lines += ["## What to conclude (paired 95% bootstrap intervals; generated from the figures below)", "",
                  *found, ""]
    if "preference" in report:
        lines += [f"## Preference prediction ({split['preference_test_records']} test records)", "",
                  *_table(report["preference"], ("auc", "AUC"), ("logloss", "LogLoss")), ""]
    if "ranking" in report:
        lines += [f"## Next-item ranking ({split['test_windows']} test windows, {split['catalogue_items']} items, "
                  "full ranking)", "", *_table(report["ranking"], ("ndcg@10", "NDCG@10"), ("hr@10", "HR@10")), ""]
    if any(report.get("curves", {}).values()):
        lines += ["## Data budgets (each pair trained on the same records per seed; mean over seeds [95% interval])",
                  "", *_curve_table(report), ""]
    routing = report.get("corella_routing")
    if routing:
        auc = routing["test_auc"]
        reason = (routing.get("decision") or {}).get("reason", "")
        lines += ["## CoReLLa's routing on its own samples", "",
                  f"{routing['valid_samples']} validation / {routing['test_samples']} test records: routing "
                  f"{routing['routing']} ({routing['llm_share']:.0%} to the LLM); test AUC CRM {auc['crm']:.4f}, LLM "
                  f"{auc['llm']:.4f}, routed {auc['routed']:.4f}. {reason}", ""]
    if report.get("slices"):
        lines += [f"## Slices (cold: at most {report.get('cold_max_interactions')} training interactions; the CRM's "
                  "entropy above / at or below its median)", "", *_slice_table(report["slices"]), ""]
    if report.get("selection"):
        lines += ["## Selection rules (fixed in the config before any test figure)", "",
                  *[f"- {m}: {rule['rule']}" for m, rule in report["selection"].items()], ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ what a reader should conclude
def _interval(diff: float, ci: list[float]) -> str:
    """A paired difference, its interval and what the interval says."""
    verdict = "above 0" if ci[0] > 0 else "below 0" if ci[1] < 0 else "reaches 0: no difference shown"
    return f"{diff:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}], {verdict}"


def conclusions(report: dict[str, Any]) -> list[str]:
    """Per row that is not a baseline, each claim with its paired interval: against the best baseline as the
    table trains them, on the data-budget axis (its counterpart on the same records; the largest budget whose
    interval is above 0), on the slices where its interval clears 0 (95% each, not corrected for the number of
    slices), and its inference cost next to the best baseline's."""
    lines = []
    for part, baselines in (("preference", PREFERENCE_BASELINES), ("ranking", RANKING_BASELINES)):
        metric = METRIC[part]
        for name, row in report.get(part, {}).items():
            versus = row.get("vs_best_baseline")
            if name in baselines or not versus:
                continue
            best = report[part].get(versus["baseline"], {})
            claims = [f"vs {versus['baseline']} ({best.get('train_records', 'n/a')} training records): "
                      f"{metric} {_interval(versus[f'{metric}_diff'], versus['ci'])}"]
            budget = report.get("budget_comparisons", {}).get(name)
            if budget:
                won = report.get("wins", {}).get(name)
                paired = "; ".join(f"N = {n}: {_interval(d['diff'], d['ci'])}" for n, d in budget["paired"].items())
                claims.append(f"vs {budget['vs']} on the same records: " + (
                    f"largest budget with its interval above 0: N = {won}" if won is not None
                    else "its interval is above 0 at no budget") + f" ({paired})")
            paired_slices = {slice_name: rows[name]["vs_best"] for slice_name, rows in report.get("slices", {}).items()
                             if (rows.get(name) or {}).get("vs_best")}
            cleared = [f"{slice_name} {_interval(vs['diff'], vs['ci'])} vs {vs['baseline']}"
                       for slice_name, vs in paired_slices.items() if vs["ci"][0] > 0 or vs["ci"][1] < 0]
            claims.append("slices whose interval clears 0: " + ("; ".join(cleared) if cleared
                                                                 else "none" if paired_slices else "not computed"))
            cost, best_cost = row.get("infer_s_per_1000"), best.get("infer_s_per_1000")
            if cost and best_cost:
                ratio = cost / best_cost
                claims.append(f"inference {cost:.3g} s per 1,000 records, "
                              f"{f'{ratio:,.0f}' if ratio >= 10 else f'{ratio:.2g}'}x {versus['baseline']}'s")
            lines += [f"- **{name}** ({row.get('train_records', 'n/a')} training records)",
                      *[f"  - {claim}" for claim in claims]]
    return lines


def _table(rows: dict[str, dict[str, Any]], metric: tuple[str, str], other: tuple[str, str]) -> list[str]:
    (key, label), (other_key, other_label) = metric, other
    lines = [f"| row | {label} | 95% interval | vs best baseline (paired) | {other_label} | train records | "
             "features | epochs | train s | infer s / 1000 | recipe |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        versus = row.get("vs_best_baseline")
        shown = (f"{versus[f'{key}_diff']:+.4f} [{versus['ci'][0]:+.4f}, {versus['ci'][1]:+.4f}] vs "
                 f"{versus['baseline']}" if versus else "best baseline")
        low, high = row[f"{key}_ci"]
        lines.append(f"| {name} | {row[key]:.4f} | [{low:.4f}, {high:.4f}] | {shown} | {row[other_key]:.4f} | "
                     f"{row.get('train_records', 'n/a')} | {row.get('features', 'n/a')} | {row.get('epochs', 'n/a')} | "
                     f"{_seconds(row.get('train_s'))} | {_seconds(row.get('infer_s_per_1000'))} | {row['recipe']} |")
    return lines


def _curve_table(report: dict[str, Any]) -> list[str]:
    lines = []
    for part, rows in report["curves"].items():
        if not rows:
            continue
        budgets = sorted({n for points in rows.values() for n in points},
                         key=lambda n: (1, 0) if n == "all" else (0, int(n)))  # "all" last
        lines += [f"| {part}: row | " + " | ".join(f"N = {n}" for n in budgets) + " |",
                  "|---|" + "---|" * len(budgets)]
        for row, points in rows.items():
            cells = [f"{points[n]['mean']:.4f} [{points[n]['ci'][0]:.4f}, {points[n]['ci'][1]:.4f}]"
                     if n in points else "" for n in budgets]
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        lines.append("")
    for row, budget in report.get("wins", {}).items():
        paired = report.get("budget_comparisons", {}).get(row, {})
        lines.append(f"- {row} vs {paired.get('vs')}: " + ("never beats it with a paired interval above 0" if budget
                     is None else f"beats it with a paired interval above 0 up to N = {budget}") + "; paired: " +
                     ", ".join(f"N = {n}: {d['diff']:+.4f} [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]"
                               for n, d in paired.get("paired", {}).items()))
    return lines


def _slice_table(slices: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| slice | row | records | metric | 95% interval | vs the slice's best baseline (paired) |",
             "|---|---|---|---|---|---|"]
    for name, rows in slices.items():
        for row, found in rows.items():
            metric = "auc" if "auc" in found else "ndcg@10"
            value = found.get(metric)
            if value is None:
                lines.append(f"| {name} | {row} | {found.get('records', 0)} | n/a (one label) | | |")
                continue
            low, high = found["ci"]
            versus = found.get("vs_best")
            shown = (f"{versus['diff']:+.4f} [{versus['ci'][0]:+.4f}, {versus['ci'][1]:+.4f}] vs "
                     f"{versus['baseline']}" if versus else "best baseline")
            lines.append(f"| {name} | {row} | {found['records']} | {metric} {value:.4f} | [{low:.4f}, {high:.4f}] | "
                         f"{shown} |")
    return lines


def plot(report: dict[str, Any], path: Path) -> None:
    """Per task: each row's metric with its interval (grey = baseline), and the cost panel: the metric against
    inference seconds per 1,000 records (log x), the Pareto front drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(k, METRIC[k]) for k in ("preference", "ranking") if k in report]
    if not panels:
        return
    fig, axes = plt.subplots(3, len(panels), figsize=(6.5 * len(panels), 12.6), squeeze=False)
    baselines = set(PREFERENCE_BASELINES) | set(RANKING_BASELINES)
    for column, (part, metric) in enumerate(panels):
        rows = report[part]
        _bars(axes[0][column], rows, metric, baselines, part)
        _budget(axes[1][column], report.get("curves", {}).get(part, {}), metric, part)
        _cost(axes[2][column], rows, metric, baselines, part)
    fig.suptitle(f"{report['dataset']}, {report['model']}: one time split", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _bars(ax, rows: dict[str, Any], metric: str, baselines: set[str], part: str) -> None:
    names = list(rows)
    values = [rows[n][metric] for n in names]
    low = [v - rows[n][f"{metric}_ci"][0] for n, v in zip(names, values)]
    high = [rows[n][f"{metric}_ci"][1] - v for n, v in zip(names, values)]
    ax.barh(names, values, xerr=[low, high], color=["#999999" if n in baselines else "#3b75af" for n in names],
            capsize=3)
    ax.invert_yaxis()
    ax.set_xlabel(f"{metric.upper()} (95% bootstrap interval; grey = baseline)")
    ax.set_title(part)
    if metric == "auc":
        ax.axvline(0.5, color="black", lw=0.8, ls=":")
        ax.set_xlim(0.3, 1.0)


def _budget(ax, curves: dict[str, Any], metric: str, part: str) -> None:
    """The metric against the training records (log x), a line per row, its interval as a band; a row trained
    on every record ("all") as a dashed level."""
    if not curves:
        ax.text(0.5, 0.5, "no data-budget runs for this task", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    for row, points in curves.items():
        budgets = sorted(int(n) for n in points if n != "all")
        if budgets:
            means = [points[str(n)]["mean"] for n in budgets]
            line, = ax.plot(budgets, means, marker="o", label=row)
            ax.fill_between(budgets, [points[str(n)]["ci"][0] for n in budgets],
                            [points[str(n)]["ci"][1] for n in budgets], color=line.get_color(), alpha=0.15)
        if "all" in points:
            ax.axhline(points["all"]["mean"], ls="--", lw=1, color="#555555",
                       label=f"{row}, all {points['all'].get('train_records', '')} records")
    ax.set_xscale("log")
    ax.set_xlabel("training records (log; each point the mean over seeds, band: 95% interval)")
    ax.set_ylabel(metric.upper())
    ax.set_title(f"{part}: the same records for each pair")
    ax.legend(fontsize=8)


def _cost(ax, rows: dict[str, Any], metric: str, baselines: set[str], part: str) -> None:
    timed = {n: r for n, r in rows.items() if r.get("infer_s_per_1000")}
    if not timed:
        ax.text(0.5, 0.5, "no inference times for these rows", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    for name, row in timed.items():
        ax.scatter(row["infer_s_per_1000"], row[metric], color="#999999" if name in baselines else "#3b75af")
        ax.annotate(name, (row["infer_s_per_1000"], row[metric]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    front = pareto_front({n: (r["infer_s_per_1000"], r[metric]) for n, r in timed.items()})
    ax.plot([timed[n]["infer_s_per_1000"] for n in front], [timed[n][metric] for n in front], color="#d62728",
            lw=1, ls="--", label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("inference seconds per 1,000 records (log)")
    ax.set_ylabel(metric.upper())
    ax.set_title(f"{part}: quality against cost")
    ax.legend(fontsize=8)


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """The rows no other row beats on both cost (lower) and metric (higher), cheapest first."""
    front, best = [], -np.inf
    for name, (cost, value) in sorted(points.items(), key=lambda kv: (kv[1][0], -kv[1][1])):
        if value > best:
            front.append(name)
            best = value
    return front
